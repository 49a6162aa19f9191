//! The layering ARCHITECTURE.md promises, checked on the source itself:
//! - no import circle among the top-level modules of `src/`, nor among its
//!   files (non-test code; a path to
//!   an item is an edge to the file of the deepest module it names, `mod x;`
//!   declarations are not edges);
//! - `config/` imports no component module, and neither does the pipeline
//!   graph (`pipeline/`), which only calls factories and wires consumers;
//! - the leaf contract (`consumer/`) imports only the data types.

// Test code: an unwrap or expect that fails is the test failing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Folders whose files are components.
const COMPONENT_DIRS: &[&str] = &[
    "receivers",
    "processors",
    "exporters",
    "connectors",
    "extensions",
];

struct Module {
    file: String,
    path: Vec<String>,
    children: Vec<String>,
    code: String,
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let p = entry.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

/// Source without comments, string literals and `#[cfg(test)]` items.
fn strip(src: &str) -> String {
    let b = src.as_bytes();
    let mut out = String::with_capacity(src.len());
    let mut i = 0;
    while i < b.len() {
        if b[i..].starts_with(b"//") {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if b[i..].starts_with(b"/*") {
            let end = src[i + 2..].find("*/").map_or(b.len(), |e| i + 2 + e + 2);
            i = end;
        } else if b[i] == b'"' {
            // Raw strings are rare enough in src/ paths-wise; handle escapes.
            i += 1;
            while i < b.len() && b[i] != b'"' {
                if b[i] == b'\\' {
                    i += 1;
                }
                i += 1;
            }
            i += 1;
            out.push_str("\"\"");
        } else if b[i] == b'\'' && i + 2 < b.len() && (b[i + 2] == b'\'' || b[i + 1] == b'\\') {
            // A char literal such as '"' or '\n'.
            let close = src[i + 1..].find('\'').map_or(b.len(), |e| i + 1 + e);
            let close = if b[i + 1] == b'\\' {
                src[i + 3..].find('\'').map_or(b.len(), |e| i + 3 + e)
            } else {
                close
            };
            i = close + 1;
            out.push_str("' '");
        } else {
            out.push(b[i] as char);
            i += 1;
        }
    }
    inline_modules(&remove_cfg_test(&out))
}

/// Inside an inline `mod name { ... }`, `super::` is the file's own module:
/// rewrite it to `self::` so paths resolve to the file.
fn inline_modules(src: &str) -> String {
    let mut out = src.to_string();
    let mut from = 0;
    while let Some(at) = out[from..].find("mod ").map(|a| a + from) {
        let before = out[..at].chars().last();
        let rest = &out[at + 4..];
        let name_len = rest
            .find(|c: char| !(c.is_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        let after = rest[name_len..].trim_start();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') || !after.starts_with('{') {
            from = at + 4;
            continue;
        }
        let open = at + 4 + name_len + (rest[name_len..].len() - after.len());
        let mut depth = 0;
        let mut end = out.len();
        for (i, c) in out[open..].char_indices() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = open + i;
                        break;
                    }
                }
                _ => {}
            }
        }
        let body = out[open..end].replace("super::", "self::");
        out.replace_range(open..end, &body);
        from = open + 1;
    }
    out
}

/// Drops every item after `#[cfg(test)]` (a `mod x;` or a braced block).
fn remove_cfg_test(src: &str) -> String {
    let mut out = String::new();
    let mut rest = src;
    while let Some(at) = rest.find("#[cfg(test)]") {
        out.push_str(&rest[..at]);
        let after = &rest[at..];
        let semi = after.find(';').unwrap_or(after.len());
        let brace = after.find('{').unwrap_or(after.len());
        if semi < brace {
            rest = &after[semi + 1..];
            continue;
        }
        let mut depth = 0;
        let mut end = after.len();
        for (i, c) in after.char_indices().skip(brace) {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = i + 1;
                        break;
                    }
                }
                _ => {}
            }
        }
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

fn load() -> Vec<Module> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&root, &mut files);
    let mut modules = Vec::new();
    for f in files {
        let rel = f.strip_prefix(&root).unwrap().to_string_lossy().to_string();
        let name = f.file_name().unwrap().to_string_lossy().to_string();
        // Test modules in their own files, and the binary, are not the library.
        if name == "tests.rs" || rel == "main.rs" {
            continue;
        }
        let mut path: Vec<String> = rel
            .trim_end_matches(".rs")
            .split('/')
            .map(str::to_string)
            .collect();
        if path.last().is_some_and(|l| l == "mod" || l == "lib") {
            path.pop();
        }
        let code = strip(&std::fs::read_to_string(&f).unwrap());
        let children = code
            .split(';')
            .filter_map(|stmt| {
                let words: Vec<&str> = stmt.split_whitespace().collect();
                match words.as_slice() {
                    [.., "mod", name] if !name.contains('{') => Some(name.to_string()),
                    _ => None,
                }
            })
            .collect();
        modules.push(Module {
            file: rel,
            path,
            children,
            code,
        });
    }
    modules
}

/// Expands the path (or use tree) that starts at `s` into full paths.
fn use_tree(s: &[char], i: &mut usize, prefix: Vec<String>, out: &mut Vec<Vec<String>>) {
    let mut path = prefix;
    loop {
        while *i < s.len() && s[*i].is_whitespace() {
            *i += 1;
        }
        if *i < s.len() && s[*i] == '{' {
            *i += 1;
            loop {
                use_tree(s, i, path.clone(), out);
                while *i < s.len() && s[*i].is_whitespace() {
                    *i += 1;
                }
                if *i < s.len() && s[*i] == ',' {
                    *i += 1;
                    continue;
                }
                if *i < s.len() && s[*i] == '}' {
                    *i += 1;
                }
                return;
            }
        }
        let start = *i;
        while *i < s.len() && (s[*i].is_alphanumeric() || s[*i] == '_') {
            *i += 1;
        }
        if *i == start {
            if *i < s.len() && s[*i] == '*' {
                *i += 1;
            }
            out.push(path);
            return;
        }
        path.push(s[start..*i].iter().collect());
        if s[*i..].starts_with(&[':', ':']) {
            *i += 2;
            continue;
        }
        out.push(path);
        return;
    }
}

/// Every module path that `m` names.
fn paths(m: &Module) -> Vec<Vec<String>> {
    let s: Vec<char> = m.code.chars().collect();
    let mut out = Vec::new();
    let parent = &m.path[..m.path.len().saturating_sub(1)];
    let mut i = 0;
    while i < s.len() {
        let boundary =
            i == 0 || !(s[i - 1].is_alphanumeric() || s[i - 1] == '_' || s[i - 1] == ':');
        if !boundary {
            i += 1;
            continue;
        }
        let word_end = (i..s.len())
            .find(|&j| !(s[j].is_alphanumeric() || s[j] == '_'))
            .unwrap_or(s.len());
        let word: String = s[i..word_end].iter().collect();
        if word_end == i || !s[word_end..].starts_with(&[':', ':']) {
            i = word_end.max(i + 1);
            continue;
        }
        // Where the path starts, and where its first segment to read is.
        let base: Option<(Vec<String>, usize)> = match word.as_str() {
            "crate" => Some((Vec::new(), word_end + 2)),
            "super" => Some((parent.to_vec(), word_end + 2)),
            "self" => Some((m.path.clone(), word_end + 2)),
            // A path through a child module (`otlp::OtlpFactory` in a mod.rs).
            w if m.children.iter().any(|c| c == w) => Some((m.path.clone(), i)),
            _ => None,
        };
        match base {
            Some((base, from)) => {
                i = from;
                use_tree(&s, &mut i, base, &mut out);
            }
            None => i = word_end,
        }
    }
    out
}

/// File-level import edges of the library: `from -> {to}`.
fn edges(modules: &[Module]) -> BTreeMap<String, BTreeSet<String>> {
    let by_path: BTreeMap<&[String], &str> = modules
        .iter()
        .map(|m| (m.path.as_slice(), m.file.as_str()))
        .collect();
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for m in modules {
        let set = out.entry(m.file.clone()).or_default();
        for p in paths(m) {
            // The deepest module the path names.
            let target = (0..=p.len())
                .rev()
                .find_map(|n| by_path.get(&p[..n]).copied());
            if let Some(t) = target {
                if t != m.file && t != "lib.rs" {
                    set.insert(t.to_string());
                }
            }
        }
    }
    out
}

/// One cycle in the graph, if any.
fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        n: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<String, u8>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        state.insert(n.to_string(), 1);
        stack.push(n.to_string());
        for next in graph.get(n).into_iter().flatten() {
            match state.get(next.as_str()).copied().unwrap_or(0) {
                1 => {
                    let from = stack.iter().position(|s| s == next).unwrap();
                    let mut cycle = stack[from..].to_vec();
                    cycle.push(next.clone());
                    return Some(cycle);
                }
                0 => {
                    if let Some(c) = visit(next, graph, state, stack) {
                        return Some(c);
                    }
                }
                _ => {}
            }
        }
        stack.pop();
        state.insert(n.to_string(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for n in graph.keys() {
        if state.get(n.as_str()).copied().unwrap_or(0) == 0 {
            let mut stack = Vec::new();
            if let Some(c) = visit(n, graph, &mut state, &mut stack) {
                return Some(c);
            }
        }
    }
    None
}

fn is_component(file: &str) -> bool {
    COMPONENT_DIRS
        .iter()
        .any(|d| file.starts_with(&format!("{d}/")))
}

#[test]
fn the_checker_sees_imports_and_cycles() {
    // The checker itself: a made-up pair of modules that import each other.
    let a = Module {
        file: "a.rs".into(),
        path: vec!["a".into()],
        children: vec![],
        code: "use crate::b::{X, y::Z};\nfn f() { crate::c::g(); }".into(),
    };
    let b = Module {
        file: "b/mod.rs".into(),
        path: vec!["b".into()],
        children: vec!["y".into()],
        code: "mod y; use super::a::W; fn h() { y::k(); }".into(),
    };
    let y = Module {
        file: "b/y.rs".into(),
        path: vec!["b".into(), "y".into()],
        children: vec![],
        code: "".into(),
    };
    let c = Module {
        file: "c.rs".into(),
        path: vec!["c".into()],
        children: vec![],
        code: strip("// use crate::a::Q;\nconst S: &str = \"crate::a::R\";\n#[cfg(test)]\nmod tests {\n    use crate::a::T;\n}\n"),
    };
    let g = edges(&[a, b, y, c]);
    assert_eq!(
        g["a.rs"],
        ["b/mod.rs", "b/y.rs", "c.rs"].map(String::from).into()
    );
    assert_eq!(g["b/mod.rs"], ["a.rs", "b/y.rs"].map(String::from).into());
    assert!(g["c.rs"].is_empty(), "comments and strings are not imports");
    let cycle = find_cycle(&g).unwrap();
    assert!(cycle.contains(&"a.rs".to_string()) && cycle.contains(&"b/mod.rs".to_string()));
}

#[test]
fn no_import_circle_among_src_files() {
    let modules = load();
    assert!(modules.len() > 60, "found only {} files", modules.len());
    let g = edges(&modules);
    // Report every circle: remove each found circle's first edge and look again.
    let mut g2 = g.clone();
    let mut cycles = Vec::new();
    while let Some(cycle) = find_cycle(&g2) {
        if let Some(set) = g2.get_mut(&cycle[0]) {
            set.remove(&cycle[1]);
        }
        cycles.push(cycle.join(" -> "));
    }
    assert!(cycles.is_empty(), "import circles:\n{}", cycles.join("\n"));
}

/// The top-level module of a file: `config/mod.rs` -> `config`, `net.rs`... -> `net`.
fn top(file: &str) -> String {
    file.split('/')
        .next()
        .unwrap_or(file)
        .trim_end_matches(".rs")
        .to_string()
}

#[test]
fn no_import_circle_among_top_level_modules() {
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (from, to) in edges(&load()) {
        let set = g.entry(top(&from)).or_default();
        set.extend(to.iter().map(|t| top(t)).filter(|t| *t != top(&from)));
    }
    if let Some(cycle) = find_cycle(&g) {
        panic!("import circle between modules: {}", cycle.join(" -> "));
    }
}

#[test]
fn config_and_the_graph_name_no_component() {
    let g = edges(&load());
    for (from, to) in &g {
        if from.starts_with("config/") || from.starts_with("pipeline/") {
            let named: Vec<&String> = to.iter().filter(|t| is_component(t)).collect();
            assert!(named.is_empty(), "{from} imports components: {named:?}");
        }
    }
}

#[test]
fn the_leaf_contract_imports_only_data_types() {
    let g = edges(&load());
    for (from, to) in &g {
        if from.starts_with("consumer/") {
            for t in to {
                assert!(
                    t.starts_with("consumer/") || t == "signal.rs",
                    "{from} imports {t}"
                );
            }
        }
    }
}
