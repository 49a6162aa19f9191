"""Drives the live exporter's page in Debian's Chromium, headless, with
Selenium (and Debian's chromedriver).

usage: live_page.py URL SCREENSHOT
Prints "ready" when the page is live. Then reads one JSON line from stdin:
{"sessions": [ids], "nested": id, "failed": id, "spans": {id: count}}. It
waits until the page lists every session, opens `nested` and `failed`, and
prints one JSON object: when each session first appeared on the page (ms
since the epoch, the page's clock), the waterfall rows and depths of the two
sessions, whether the failure is marked, the token totals the page shows,
and the page's text of hostile names (for the escaping check).
"""
import json
import sys
import time

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

url, shot = sys.argv[1], sys.argv[2]
opts = webdriver.ChromeOptions()
opts.binary_location = "/usr/bin/chromium"
for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1280,1000"):
    opts.add_argument(a)
driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)
try:
    driver.get(url)
    WebDriverWait(driver, 15).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#conn.up"))
    # Record when each session row first appears, by the page's own clock.
    driver.execute_script("""
        window.__seen = {};
        const mark = () => document.querySelectorAll('tr[data-session]').forEach((tr) => {
            if (!(tr.dataset.session in window.__seen)) window.__seen[tr.dataset.session] = Date.now();
        });
        new MutationObserver(mark).observe(document.body, {subtree: true, childList: true});
        mark();
    """)
    print("ready", flush=True)
    want = json.loads(sys.stdin.readline())
    WebDriverWait(driver, 20, poll_frequency=0.05).until(
        lambda d: all(s in d.execute_script("return window.__seen") for s in want["sessions"]))
    seen = driver.execute_script("return window.__seen")
    rows = driver.find_elements(By.CSS_SELECTOR, "tr[data-session]")
    tokens_in = sum(int(r.get_attribute("data-input-tokens")) for r in rows)
    tokens_out = sum(int(r.get_attribute("data-output-tokens")) for r in rows)

    def open_session(sid):
        driver.find_element(By.CSS_SELECTOR, f'tr[data-session="{sid}"]').click()
        n = want["spans"][sid]
        WebDriverWait(driver, 10).until(
            lambda d: len(d.find_elements(By.CSS_SELECTOR, "#waterfall .row")) == n)
        rows = driver.find_elements(By.CSS_SELECTOR, "#waterfall .row")
        return {
            "rows": len(rows),
            "agent_depths": sorted({int(r.get_attribute("data-depth")) for r in rows
                                    if r.get_attribute("data-class") == "agent"}),
            "errors_marked": len(driver.find_elements(By.CSS_SELECTOR, "#waterfall .row.error .mark")),
        }

    # One click on a recent failure opens its session with the failing
    # span's attributes shown (a fresh page load: what a newcomer sees).
    driver.get(url)
    WebDriverWait(driver, 15).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#conn.up"))
    WebDriverWait(driver, 10).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#failures li button"))
    first = driver.find_element(By.CSS_SELECTOR, "#failures li")
    failure_span = first.get_attribute("data-span-id")
    first.find_element(By.TAG_NAME, "button").click()
    WebDriverWait(driver, 10).until(
        lambda d: d.find_elements(By.CSS_SELECTOR, "#waterfall .row.shown.error"))
    one_click = {
        "span": failure_span,
        "shown": driver.find_element(By.CSS_SELECTOR, "#waterfall .row.shown").get_attribute("data-span-id"),
        "title": driver.find_element(By.ID, "attrs-title").text,
        "attrs_visible": driver.find_element(By.ID, "attrs").is_displayed(),
    }
    nested = open_session(want["nested"])
    failed = open_session(want["failed"])
    # One click on the failing span shows its attributes.
    driver.find_element(By.CSS_SELECTOR, "#waterfall .row.error").click()
    attrs_title = driver.find_element(By.ID, "attrs-title").text
    hostile = None
    if want.get("hostile"):
        hostile_rows = open_session(want["hostile"])
        hostile = {
            "rows": hostile_rows["rows"],
            "labels": [e.text for e in driver.find_elements(By.CSS_SELECTOR, "#waterfall .label span:first-child")],
            "scripts": len(driver.find_elements(By.CSS_SELECTOR, "#waterfall script, #waterfall img")),
            "alert": driver.execute_script("return window.__pwned === true"),
        }
    driver.save_screenshot(shot)
    # A phone-width screen: nothing wider than the screen, the waterfall on it.
    driver.set_window_size(390, 844)
    time.sleep(0.3)
    phone = {
        "width": driver.execute_script("return document.documentElement.scrollWidth"),
        "viewport": driver.execute_script("return window.innerWidth"),
        "waterfall_rows": len(driver.find_elements(By.CSS_SELECTOR, "#waterfall .row")),
    }
    driver.save_screenshot(shot.replace(".png", "-phone.png"))
    print(json.dumps({"seen": seen, "tokens": [tokens_in, tokens_out], "nested": nested,
                      "failed": failed, "attrs_title": attrs_title, "hostile": hostile,
                      "one_click": one_click, "phone": phone,
                      "width": driver.execute_script("return document.documentElement.scrollWidth")}),
          flush=True)
finally:
    driver.quit()
