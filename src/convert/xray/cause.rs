//! `cause.exceptions` from OTLP `exception` events, with stack frames parsed
//! from the stack traces of the languages agents are usually written in.

/// One frame of a stack trace.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Frame<'a> {
    pub path: &'a str,
    pub line: i64,
    pub label: &'a str,
}

/// One entry of `cause.exceptions`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Exception<'a> {
    pub id: String,
    pub kind: &'a str,
    pub message: &'a str,
    pub remote: bool,
    pub stack: Vec<Frame<'a>>,
    /// Id of the exception that caused this one.
    pub cause: Option<String>,
}

/// A deterministic exception id, so that a retried document is identical.
pub(crate) fn exception_id(span_id: &[u8], n: usize) -> String {
    let mut base = [0u8; 8];
    for (i, b) in span_id.iter().take(8).enumerate() {
        base[i] = *b;
    }
    let v = u64::from_be_bytes(base).rotate_left(17)
        ^ ((n as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    format!("{v:016x}")
}

/// Parses `stacktrace` (as written by `language`'s OTel SDK) into frames of
/// `first`, adding the exceptions it was caused by after it.
pub(crate) fn parse_stack<'a>(
    language: &str,
    stacktrace: &'a str,
    span_id: &[u8],
    first: Exception<'a>,
    next_n: &mut usize,
) -> Vec<Exception<'a>> {
    match language {
        "python" => python(stacktrace, span_id, first, next_n),
        "java" | "php" => java(stacktrace, span_id, first, next_n),
        "nodejs" | "javascript" | "webjs" => vec![javascript(stacktrace, first)],
        _ => vec![first],
    }
}

/// Python tracebacks: `  File "path", line N, in label` lines, innermost last;
/// chained exceptions are separated by "During handling of the above
/// exception..." / "The above exception was the direct cause...". The last
/// block is the exception reported; earlier blocks are its causes.
fn python<'a>(
    trace: &'a str,
    span_id: &[u8],
    mut first: Exception<'a>,
    next_n: &mut usize,
) -> Vec<Exception<'a>> {
    const SEPARATORS: [&str; 2] = [
        "During handling of the above exception, another exception occurred:",
        "The above exception was the direct cause of the following exception:",
    ];
    // Split into blocks, each: "Traceback..." + frames + "Type: message".
    let mut blocks: Vec<Vec<&'a str>> = vec![Vec::new()];
    for line in trace.lines() {
        if SEPARATORS.contains(&line.trim()) {
            blocks.push(Vec::new());
        } else if let Some(b) = blocks.last_mut() {
            b.push(line);
        }
    }
    let parse_frames = |lines: &[&'a str]| -> Vec<Frame<'a>> {
        let mut frames: Vec<Frame<'a>> = lines
            .iter()
            .filter_map(|l| {
                let rest = l.strip_prefix("  File \"")?;
                let (path, rest) = rest.split_once("\", line ")?;
                let (line, label) = match rest.split_once(", in ") {
                    Some((n, label)) => (n, label),
                    None => (rest, ""),
                };
                Some(Frame {
                    path,
                    line: line.trim().parse().unwrap_or(0),
                    label,
                })
            })
            .collect();
        // X-Ray lists the innermost frame first; Python prints it last.
        frames.reverse();
        frames
    };
    let last = blocks.pop().unwrap_or_default();
    first.stack = parse_frames(&last);
    let mut out = vec![first];
    // Earlier blocks are causes, nearest first.
    for block in blocks.iter().rev() {
        let summary = block
            .iter()
            .rev()
            .find(|l| !l.trim().is_empty() && !l.starts_with(' '))
            .copied()
            .unwrap_or("");
        let (kind, message) = match summary.split_once(": ") {
            Some((k, m)) => (k, m),
            None => (summary, ""),
        };
        let id = exception_id(span_id, *next_n);
        *next_n += 1;
        if let Some(prev) = out.last_mut() {
            prev.cause = Some(id.clone());
        }
        let remote = out[0].remote;
        out.push(Exception {
            id,
            kind,
            message,
            remote,
            stack: parse_frames(block),
            cause: None,
        });
    }
    out
}

/// Java stack traces: `\tat pkg.Class.method(File.java:12)` lines, with
/// `Caused by: Type: message` starting each cause.
fn java<'a>(
    trace: &'a str,
    span_id: &[u8],
    first: Exception<'a>,
    next_n: &mut usize,
) -> Vec<Exception<'a>> {
    let mut out = vec![first];
    for line in trace.lines().skip(1) {
        if let Some(frame) = line.trim_start().strip_prefix("at ") {
            let Some(open) = frame.find('(') else {
                continue;
            };
            if !frame.ends_with(')') {
                continue;
            }
            let mut label = &frame[..open];
            if let Some((_, after)) = label.split_once('/') {
                // class loader or module prefix
                label = after;
            }
            let loc = &frame[open + 1..frame.len() - 1];
            let (path, line) = match loc.rsplit_once(':') {
                Some((p, n)) => (p, n.parse().unwrap_or(0)),
                None => (loc, 0),
            };
            if let Some(e) = out.last_mut() {
                e.stack.push(Frame { path, line, label });
            }
        } else if let Some(cause) = line.strip_prefix("Caused by: ") {
            let (kind, message) = match cause.split_once(": ") {
                Some((k, m)) => (k, m),
                None => (cause, ""),
            };
            let id = exception_id(span_id, *next_n);
            *next_n += 1;
            if let Some(prev) = out.last_mut() {
                prev.cause = Some(id.clone());
            }
            let remote = out[0].remote;
            out.push(Exception {
                id,
                kind,
                message,
                remote,
                stack: Vec::new(),
                cause: None,
            });
        }
    }
    out
}

/// V8 stack traces: `    at label (path:line:col)` or `    at path:line:col`.
fn javascript<'a>(trace: &'a str, mut first: Exception<'a>) -> Exception<'a> {
    for line in trace.lines().skip(1) {
        let Some(frame) = line.trim_start().strip_prefix("at ") else {
            continue;
        };
        let (label, loc) = match (frame.find('('), frame.ends_with(')')) {
            (Some(open), true) => (frame[..open].trim_end(), &frame[open + 1..frame.len() - 1]),
            _ => ("", frame),
        };
        // path:line:col — the path itself may contain colons (file:///...).
        let mut parts = loc.rsplitn(3, ':');
        let (_col, line_no, path) = (parts.next(), parts.next(), parts.next());
        let (path, line_no) = match (path, line_no.and_then(|n| n.parse().ok())) {
            (Some(p), Some(n)) => (p, n),
            _ => (loc, 0),
        };
        first.stack.push(Frame {
            path,
            line: line_no,
            label,
        });
    }
    first
}

#[cfg(test)]
mod tests {
    use super::*;

    fn top(kind: &'static str) -> Exception<'static> {
        Exception {
            id: "0".into(),
            kind,
            message: "",
            remote: false,
            stack: Vec::new(),
            cause: None,
        }
    }

    #[test]
    fn python_traceback_with_a_cause() {
        let trace = "Traceback (most recent call last):\n  File \"/app/tools.py\", line 10, in lookup\n    raise KeyError('x')\nKeyError: 'x'\n\nDuring handling of the above exception, another exception occurred:\n\nTraceback (most recent call last):\n  File \"/app/agent.py\", line 3, in run\n    tool()\n  File \"/app/tools.py\", line 12, in tool\n    raise ValueError('bad')\nValueError: bad\n";
        let mut n = 1;
        let ex = parse_stack("python", trace, &[1; 8], top("ValueError"), &mut n);
        assert_eq!(ex.len(), 2);
        assert_eq!(
            ex[0].stack,
            vec![
                Frame {
                    path: "/app/tools.py",
                    line: 12,
                    label: "tool"
                },
                Frame {
                    path: "/app/agent.py",
                    line: 3,
                    label: "run"
                },
            ]
        );
        assert_eq!(ex[1].kind, "KeyError");
        assert_eq!(ex[1].message, "'x'");
        assert_eq!(ex[0].cause.as_deref(), Some(ex[1].id.as_str()));
        assert_eq!(ex[1].stack[0].line, 10);
    }

    #[test]
    fn java_trace_with_caused_by() {
        let trace = "java.lang.RuntimeException: outer\n\tat com.example.Agent.run(Agent.java:42)\n\tat java.base/java.lang.Thread.run(Thread.java:829)\nCaused by: java.io.IOException: disk\n\tat com.example.Io.read(Io.java:7)\n";
        let mut n = 1;
        let ex = parse_stack(
            "java",
            trace,
            &[2; 8],
            top("java.lang.RuntimeException"),
            &mut n,
        );
        assert_eq!(ex.len(), 2);
        assert_eq!(ex[0].stack.len(), 2);
        assert_eq!(ex[0].stack[1].label, "java.lang.Thread.run");
        assert_eq!(ex[1].kind, "java.io.IOException");
        assert_eq!(
            ex[1].stack,
            vec![Frame {
                path: "Io.java",
                line: 7,
                label: "com.example.Io.read"
            }]
        );
    }

    #[test]
    fn javascript_frames() {
        let trace = "Error: boom\n    at handler (/var/task/index.js:12:5)\n    at file:///app/main.mjs:3:1\n";
        let mut n = 1;
        let ex = parse_stack("nodejs", trace, &[3; 8], top("Error"), &mut n);
        assert_eq!(
            ex[0].stack[0],
            Frame {
                path: "/var/task/index.js",
                line: 12,
                label: "handler"
            }
        );
        assert_eq!(
            ex[0].stack[1],
            Frame {
                path: "file:///app/main.mjs",
                line: 3,
                label: ""
            }
        );
    }

    #[test]
    fn ids_are_deterministic_and_distinct() {
        assert_eq!(exception_id(&[9; 8], 0), exception_id(&[9; 8], 0));
        assert_ne!(exception_id(&[9; 8], 0), exception_id(&[9; 8], 1));
        assert_eq!(exception_id(&[9; 8], 0).len(), 16);
    }
}
