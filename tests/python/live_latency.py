"""Measures when spans become visible on the live exporter's page, in
Debian's Chromium (headless, Selenium).

usage: live_latency.py URL N
Opens URL (a `?session=` link, so the waterfall of that session is shown),
prints "ready" once the page is live, then records, by the page's clock
(ms since the epoch), when each waterfall row (`data-span-id`) first
appears, and when the WebSocket message carrying it arrived, until N rows
were seen or 60 s passed. Prints one JSON object:
{"rows": {span_id_hex: ms}, "received": {span_id_hex: ms}}.
"""
import json
import sys
import time

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

url, n = sys.argv[1], int(sys.argv[2])
opts = webdriver.ChromeOptions()
opts.binary_location = "/usr/bin/chromium"
for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1280,1000",
          "--disable-background-networking", "--disable-component-update", "--no-first-run"):
    opts.add_argument(a)
driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)
try:
    # Before the page's own script: note when each span's WebSocket message
    # arrives (the page's clock), to tell delivery from drawing.
    driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": """
        window.__recv = {};
        const Real = window.WebSocket;
        window.WebSocket = function (u, p) {
            const ws = new Real(u, p);
            if (String(u).includes('session=')) ws.addEventListener('message', (m) => {
                const now = Date.now();
                const ev = JSON.parse(m.data);
                if (ev.type === 'spans') for (const s of ev.spans) window.__recv[s.span_id] = now;
            });
            return ws;
        };
        window.WebSocket.prototype = Real.prototype;
        window.WebSocket.OPEN = Real.OPEN;
    """})
    driver.get(url)
    WebDriverWait(driver, 15).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#conn.up"))
    driver.execute_script("""
        window.__rows = {};
        window.__count = 0;
        const box = document.getElementById('waterfall');
        new MutationObserver((records) => {
            const now = Date.now();
            for (const m of records) for (const r of m.addedNodes) {
                const id = r.dataset && r.dataset.spanId;
                if (id && !(id in window.__rows)) { window.__rows[id] = now; window.__count++; }
            }
        }).observe(box, {childList: true});
    """)
    # The detail stream is open once the page subscribed; give it a moment.
    time.sleep(0.5)
    print("ready", flush=True)
    deadline = time.time() + 60
    while time.time() < deadline and driver.execute_script("return window.__count") < n:
        time.sleep(0.1)
    print(json.dumps({"rows": driver.execute_script("return window.__rows"),
                      "received": driver.execute_script("return window.__recv")}), flush=True)
finally:
    driver.quit()
