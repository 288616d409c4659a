"""Drives the console at /ui in a real headless Chromium (Debian's chromium and chromedriver,
through selenium) and asserts what a person sees. Run by tests/e2e/tests/console.rs after real
traffic went through Envoy; any failed assertion or a browser that cannot start makes the
script exit non-zero, which fails the test.

Usage: python console_e2e.py PHASE BASE_URL SPEC_JSON
  PHASE "create": signs in, checks the overview's bar for the budget, the budget page, the
    spend chart's total and rows (and the CSV export) against the ledger's total, the price
    book; creates a key through the page and writes its secret to the file the spec names
    (mode 0600; never printed).
    Then subscribes the receiver at spec["webhook_url"] to the budget's threshold
    spec["threshold"] % through the alerts page and writes the signing secret to
    spec["webhook_secret_file"] (0600; never printed).
  PHASE "revoke": signs in, revokes that key through its row's button, checks the row, signs
    out.
  PHASE "alerts": signs in and finds, in the alerts page's delivery log, the delivery of
    spec["alert_kind"] marked delivered with the receiver's answer.
SPEC_JSON: {"org", "budget_id", "key_id", "percent", "overview", "ledger_total", "requests", "model",
            "key_id_to_revoke", "secret_file", "webhook_url", "threshold", "webhook_secret_file",
            "alert_kind", "shots"}
The API token to sign in with is read from the environment (TOLLGATE_CONSOLE_TOKEN).
Screenshots of each page go to spec["shots"]. Prints one JSON line per check.
"""
import csv
import io
import json
import os
import sys
import urllib.request
from decimal import Decimal

from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import Select, WebDriverWait

CHROMIUM = os.environ.get("TOLLGATE_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("TOLLGATE_CHROMEDRIVER", "/usr/bin/chromedriver")


def say(**fields):
    print(json.dumps(fields), flush=True)


def browser():
    # Selenium Manager would try to download a driver: it is told where Debian's are.
    os.environ["SE_OFFLINE"] = "true"
    opts = Options()
    opts.binary_location = CHROMIUM
    for arg in ["--headless=new", "--no-sandbox", "--disable-gpu",
                "--disable-dev-shm-usage", "--window-size=1366,900", "--lang=en-US"]:
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(30)
    return driver


def shot(driver, spec, name, dark=False):
    scheme = "dark" if dark else "light"
    driver.execute_cdp_cmd("Emulation.setEmulatedMedia", {
        "features": [{"name": "prefers-color-scheme", "value": scheme}]})
    os.makedirs(spec["shots"], exist_ok=True)
    # The whole page, not just the window (at most 4000 px tall).
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
        "width": 1366, "height": max(800, min(height, 4000)), "deviceScaleFactor": 1,
        "mobile": False})
    path = os.path.join(spec["shots"], name + ".png")
    assert driver.save_screenshot(path), f"screenshot {path} not written"
    driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    say(check="screenshot", path=path)


def arrives(driver, path_end):
    """Waits (10 s at most) for the browser to be at a URL ending in `path_end`."""
    WebDriverWait(driver, 10).until(EC.url_matches(".*" + path_end.replace("?", r"\?") + "$"))


def sign_in(driver, base):
    driver.get(base + "/ui")
    assert driver.current_url.endswith("/ui/login"), driver.current_url
    field = driver.find_element(By.NAME, "token")
    field.send_keys(os.environ["TOLLGATE_CONSOLE_TOKEN"])
    field.submit()
    arrives(driver, "/ui")
    who = driver.find_element(By.ID, "who").text
    say(check="signed in", who=who)
    return who


def rows(driver, table_id):
    out = []
    for tr in driver.find_elements(By.CSS_SELECTOR, f"table#{table_id} tbody tr"):
        out.append([td.text for td in tr.find_elements(By.TAG_NAME, "td")])
    return out


def created_once(driver, what, prefix, secret_file):
    """Submits the page's create form (`#create-WHAT`) and reads the answer: the new object's
    id and its secret, shown this once (written to `secret_file`, 0600, never printed); then
    the page again, which must not show it. The browser stays on the page."""
    page = driver.current_url
    driver.find_element(By.ID, f"create-{what}").click()
    made = WebDriverWait(driver, 10).until(EC.presence_of_element_located((By.ID, f"new-{what}")))
    made_id = made.get_attribute("data-id")
    secret = driver.find_element(By.ID, "new-secret").text
    assert secret.startswith(prefix), f"the new {what}'s secret is not shown"
    fd = os.open(secret_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secret)
    driver.get(page)
    assert secret not in driver.page_source, f"the {what}'s secret is shown again"
    return made_id, secret


def create(driver, base, spec):
    who = sign_in(driver, base)
    assert f"manager of {spec['org']}" in who, who

    # Overview: every budget, worst first, each at the share of its limit it has spent.
    order = [(tr.get_attribute("data-budget"), tr.find_element(By.CSS_SELECTOR, "span.pct").text)
             for tr in driver.find_elements(By.CSS_SELECTOR, "table#budgets tbody tr")]
    assert order == [tuple(b) for b in spec["overview"]], (order, spec["overview"])
    say(check="overview order", budgets=len(order))

    # The key's budget: its bar at the percentage its spend is of its limit.
    row = driver.find_element(By.CSS_SELECTOR, f"tr[data-budget='{spec['budget_id']}']")
    shown = row.find_element(By.CSS_SELECTOR, "span.pct").text
    assert shown == spec["percent"], (shown, spec["percent"])
    bar = row.find_element(By.CSS_SELECTOR, "svg.bar")
    assert bar.get_attribute("data-utilization") == spec["percent"]
    fill = row.find_element(By.CSS_SELECTOR, "svg.bar rect.fill")
    width = Decimal(fill.get_attribute("width"))
    assert width == Decimal(spec["percent"].split()[0]), width
    # The bar is drawn at that share of its track, as the browser lays it out.
    track = row.find_element(By.CSS_SELECTOR, "svg.bar rect.track")
    ratio = fill.rect["width"] / track.rect["width"]
    assert abs(Decimal(str(ratio)) * 100 - width) < 1, (ratio, width)
    say(check="budget bar", percent=shown)
    shot(driver, spec, "overview")
    shot(driver, spec, "overview-dark", dark=True)

    # The budget page: this window's spend, the key and the model that spent it.
    row = driver.find_element(By.CSS_SELECTOR, f"tr[data-budget='{spec['budget_id']}']")
    row.find_element(By.TAG_NAME, "a").click()
    arrives(driver, f"/ui/budgets/{spec['budget_id']}")
    by_key = rows(driver, "by-key")
    assert [r[0] for r in by_key] == [spec["key_id"]], by_key
    assert int(by_key[0][1]) == spec["requests"], by_key
    by_model = rows(driver, "by-model")
    assert [r[0] for r in by_model] == [spec["model"]], by_model
    say(check="budget page", keys=len(by_key))
    shot(driver, spec, "budget")

    # Spend: the chart's total and its rows equal the ledger's, per day and per hour; the CSV
    # export holds exactly the rows shown.
    for query in ["", "?bucket=hour&stack=key"]:
        driver.get(base + "/ui/spend" + query)
        total = driver.find_element(By.ID, "total")
        assert Decimal(total.get_attribute("data-total")) == Decimal(spec["ledger_total"]), \
            (total.get_attribute("data-total"), spec["ledger_total"])
        assert int(total.get_attribute("data-requests")) == spec["requests"]
        shown = rows(driver, "rows")
        assert sum(Decimal(r[-1]) for r in shown) == Decimal(spec["ledger_total"]), shown
        bars = driver.find_elements(By.CSS_SELECTOR, "svg.chart rect")
        assert len(bars) >= 1, "no bar in the chart"
        link = driver.find_element(By.ID, "csv").get_attribute("href")
        cookie = "; ".join(f"{c['name']}={c['value']}" for c in driver.get_cookies())
        req = urllib.request.Request(link, headers={"Cookie": cookie})
        with urllib.request.urlopen(req, timeout=20) as resp:
            body = resp.read().decode()
        exported = list(csv.reader(io.StringIO(body)))[1:]
        assert exported == shown, (exported, shown)
        say(check="spend", query=query, total=spec["ledger_total"], rows=len(shown))
        shot(driver, spec, "spend" if not query else "spend-hourly")
    shot(driver, spec, "spend-dark", dark=True)

    # Prices: search the book, open a model.
    driver.get(base + "/ui/prices")
    box = driver.find_element(By.NAME, "q")
    box.send_keys(spec["model"])
    box.submit()
    arrives(driver, "/ui/prices?q=" + spec["model"])
    driver.find_element(By.LINK_TEXT, spec["model"]).click()
    arrives(driver, "/ui/prices/" + spec["model"])
    assert driver.find_elements(By.CSS_SELECTOR, "table#rates tr"), "no rates"
    assert driver.find_elements(By.CSS_SELECTOR, "table#history tbody tr"), "no history"
    say(check="prices")
    shot(driver, spec, "prices")

    # Keys: create one; its secret is on this page only, once.
    driver.get(base + "/ui/keys")
    driver.find_element(By.NAME, "name").send_keys("made in the console")
    Select(driver.find_element(By.NAME, "org_id")).select_by_value(spec["org"])
    key_id, _ = created_once(driver, "key", "tg-", spec["secret_file"])
    row = driver.find_element(By.CSS_SELECTOR, f"tr[data-key='{key_id}']")
    assert row.find_element(By.CSS_SELECTOR, "td.status").text == "live"
    say(check="key created", key_id=key_id)
    shot(driver, spec, "keys")

    # Alerts: subscribe the test's receiver to one threshold of the budget.
    driver.get(base + "/ui/alerts")
    driver.find_element(By.NAME, "name").send_keys("console receiver")
    driver.find_element(By.NAME, "url").send_keys(spec["webhook_url"])
    Select(driver.find_element(By.NAME, "org_id")).select_by_value(spec["org"])
    driver.find_element(By.CSS_SELECTOR, "input[name='events'][value='threshold']").click()
    driver.find_element(By.NAME, "thresholds").send_keys(str(spec["threshold"]))
    driver.find_element(By.NAME, "budget_ids").send_keys(spec["budget_id"])
    hook_id, _ = created_once(driver, "webhook", "whsec_", spec["webhook_secret_file"])
    row = driver.find_element(By.CSS_SELECTOR, f"tr[data-webhook='{hook_id}']")
    assert row.find_element(By.CSS_SELECTOR, "td.status").text == "on"
    assert f"{spec['threshold']} %" in row.text, row.text
    say(check="webhook created", webhook_id=hook_id)


def gone(element):
    """A wait condition: `element` has left the page (a form's post navigated away).

    Selenium's `staleness_of` knows only the stale-reference error; Chrome sometimes reports a
    node detached mid-navigation as an inspector error ("Node with given id does not belong
    to the document", seen on chrome 156), which means the same and is not a failure.
    """

    def check(_driver):
        try:
            element.is_enabled()
            return False
        except StaleElementReferenceException:
            return True
        except WebDriverException as e:
            if "does not belong to the document" in str(e):
                return True
            raise

    return check


def revoke(driver, base, spec):
    sign_in(driver, base)
    driver.get(base + "/ui/keys")
    key_id = spec["key_id_to_revoke"]
    row = driver.find_element(By.CSS_SELECTOR, f"tr[data-key='{key_id}']")
    row.find_element(By.XPATH, ".//button[text()='Revoke']").click()
    WebDriverWait(driver, 10).until(gone(row))
    arrives(driver, "/ui/keys")
    row = driver.find_element(By.CSS_SELECTOR, f"tr[data-key='{key_id}']")
    status = row.find_element(By.CSS_SELECTOR, "td.status").text
    assert status.startswith("revoked"), status
    assert not row.find_elements(By.XPATH, ".//button[text()='Revoke']")
    say(check="key revoked", key_id=key_id)
    shot(driver, spec, "keys-revoked")
    driver.find_element(By.XPATH, "//button[text()='Sign out']").click()
    arrives(driver, "/ui/login")
    driver.get(base + "/ui/keys")
    assert driver.current_url.endswith("/ui/login"), "still signed in after signing out"
    say(check="signed out")


def alerts(driver, base, spec):
    sign_in(driver, base)
    driver.get(base + "/ui/alerts?status=delivered")
    # Id, recorded, event, subscription, status, attempts, last answer, next attempt.
    got = [r for r in rows(driver, "deliveries") if r[2] == spec["alert_kind"]]
    assert len(got) == 1, rows(driver, "deliveries")
    assert got[0][4] == "delivered" and got[0][6].startswith("HTTP 2"), got[0]
    say(check="delivery shown", kind=spec["alert_kind"], attempts=got[0][5])
    driver.get(base + "/ui/alerts")
    shot(driver, spec, "alerts")


def main():
    phase, base, spec = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    driver = browser()
    try:
        {"create": create, "revoke": revoke, "alerts": alerts}[phase](driver, base, spec)
    finally:
        driver.quit()


if __name__ == "__main__":
    main()
