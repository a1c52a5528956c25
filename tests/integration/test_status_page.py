"""
The status page in a real browser: headless Chromium (Debian's chromium
and chromium-driver) through Selenium, against the proxy as a real twistd
process in front of two real slapd backends.  One backend is killed and
started again; the page, reloading itself, shows it down and then up within
one refresh each.  The test saves a screenshot (C{docs/status-page.png} in
the README is one); set C{LDAPROUTE_STATUS_SCREENSHOT=PATH} to keep it.
"""

from __future__ import annotations

import io
import json
import os
import shutil
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from ldaproute import cli
from ldaproute.ops.status import REFRESH_SECONDS
from tests.integration.test_operations import Proxy, ldap, quietPort
from tests.slapd import Slapd

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.support.ui import WebDriverWait

#: How long a state change may take to show: the backend's health detection
#: (interval 200ms, fall 1, rise 1), one page refresh, and slack for this
#: shared machine.
WITHIN = REFRESH_SECONDS + 3.0


def chromium() -> tuple[str, str]:
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver") or ("/usr/bin/chromedriver" if os.path.exists("/usr/bin/chromedriver") else None)
    if binary is None or driver is None:
        pytest.fail("headless Chromium is needed: apt-get install chromium chromium-driver")
    return binary, driver


@pytest.fixture
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    binary, driver = chromium()
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for argument in (
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--disable-dev-shm-usage", "--window-size=1280,1100",
        f"--user-data-dir={tmp_path_factory.mktemp('chromium')}",
    ):  # fmt: skip
        options.add_argument(argument)
    session = webdriver.Chrome(service=Service(executable_path=driver), options=options)
    try:
        yield session
    finally:
        session.quit()


@pytest.fixture
def proxies(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., Proxy]]:
    made: list[Proxy] = []

    def factory(routes: str, metricsPort: int) -> Proxy:
        proxy = Proxy(str(tmp_path_factory.mktemp("proxy")), routes, metricsPort)
        made.append(proxy)
        return proxy

    yield factory
    for proxy in made:
        proxy.stop()


#: Reads every table of the page in one call (the page reloads itself, so
#: element handles go stale between calls): heading -> rows of
#: (row class, cell texts).  The page itself has no JavaScript.
_TABLES = """
const out = {};
let heading = "";
for (const node of document.body.children) {
  if (node.tagName === "H2") { heading = node.textContent; }
  if (node.tagName === "TABLE") {
    const rows = [];
    for (const tr of node.querySelectorAll("tr")) {
      const cells = [...tr.querySelectorAll("td")].map(td => td.textContent);
      if (cells.length) { rows.push([tr.className, cells]); }
    }
    (out[heading] = out[heading] || []).push(...rows);
  }
}
return out;
"""


def tables(browser: Any) -> dict[str, list[tuple[str, list[str]]]]:
    return {k: [(c, cells) for c, cells in v] for k, v in browser.execute_script(_TABLES).items()}


def section(browser: Any, prefix: str) -> list[tuple[str, list[str]]]:
    for heading, rows in tables(browser).items():
        if heading.startswith(prefix):
            return rows
    return []


def backendState(browser: Any, name: str) -> str | None:
    """The state class of C{name}'s row in the backends table, as rendered."""
    for cls, cells in section(browser, "Pools and backends"):
        if cells[0] == name:
            return cls
    return None


def test_statusPageShowsABackendGoingDownAndUp(
    slapdFactory: Callable[..., Slapd], proxies: Callable[..., Proxy], browser: Any, tmp_path: Any
) -> None:
    one, two = slapdFactory(entries=10), slapdFactory(entries=10)
    listen, metrics = quietPort(), quietPort()
    routes = (
        f"[ldaproute]\nlisten = tcp:{listen}:interface=127.0.0.1\nrequire_tls_for_simple_bind = off\n"
        f"metrics = tcp:{metrics}:interface=127.0.0.1\n"
        f"[backend:one]\nurl = {one.url}\n[backend:two]\nurl = {two.url}\n"
        "[pool:main]\nbackends = one, two\nhealth_interval = 200ms\nhealth_rise = 1\nhealth_fall = 1\n"
        "[route:readonly]\noperations = write\nreject = 53 read-only here\n"
        "[route:all]\npool = main\n"
    )
    proxy = proxies(routes, metrics)
    proxy.start()
    for i in range(4):
        result = ldap("ldapsearch", one, listen, "-b", one.peopleDN, f"(uid=user{i})", "dn")
        assert result.returncode == 0, result.stderr
    result = ldap("ldapdelete", one, listen, "-D", one.rootDN, "-w", "secret", one.userDN(3))
    assert result.returncode == 53, result.stderr

    browser.get(f"http://127.0.0.1:{metrics}/")
    assert browser.title == "ldaproute status"
    heading = browser.execute_script("return document.querySelector('h1').textContent")
    assert heading.startswith("ldaproute ") and heading.endswith(": ready")
    assert (backendState(browser, "one"), backendState(browser, "two")) == ("up", "up")
    refresh = browser.execute_script("return document.querySelector('meta[http-equiv=refresh]').content")
    assert refresh == str(REFRESH_SECONDS)
    assert [cells[0] for _, cells in section(browser, "Operations per route")] == ["all", "readonly"]
    [(_, error)] = section(browser, "Recent errors")
    assert error[3:10] == ["delete", one.userDN(3), "", "readonly", "-", "53", "read-only here"]
    assert "secret" not in browser.page_source

    two.kill()
    # no browser.get: the page's own refresh brings the change
    WebDriverWait(browser, WITHIN, poll_frequency=0.2).until(lambda b: backendState(b, "two") == "down")
    assert backendState(browser, "one") == "up"
    assert [(cls, cells[1]) for cls, cells in section(browser, "Backend state changes")] == [("down", "two")]
    screenshot = str(tmp_path / "status-page.png")
    assert browser.save_screenshot(screenshot)
    assert os.path.getsize(screenshot) > 10_000
    keep = os.environ.get("LDAPROUTE_STATUS_SCREENSHOT")
    if keep:
        shutil.copyfile(screenshot, keep)

    # explain --live reads the same state
    out = io.StringIO()
    assert cli.main(
        ["explain", "-c", proxy.configPath, "--live", f"http://127.0.0.1:{metrics}", "search", one.peopleDN], out, io.StringIO()
    ) == 0
    assert out.getvalue().splitlines()[-1].endswith("one (up), two (down)")

    two.start()
    WebDriverWait(browser, WITHIN, poll_frequency=0.2).until(lambda b: backendState(b, "two") == "up")
    assert [(cls, cells[1]) for cls, cells in section(browser, "Backend state changes")] == [("up", "two"), ("down", "two")]

    code, body = proxy.get("/status.json")
    status = json.loads(body)
    assert code == 200
    assert [(b["name"], b["state"]) for b in status["pools"][0]["backends"]] == [("one", "up"), ("two", "up")]
    assert status["rates"]["all"]["ops"] > 0 and status["rates"]["readonly"]["errors"] > 0
    assert [(c["backend"], c["state"]) for c in status["stateChanges"]] == [("two", "up"), ("two", "down")]
    assert [e["resultCode"] for e in status["errors"]] == [53]
