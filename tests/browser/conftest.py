"""Browser tests: the real server (`feedback-service run --with-worker`) on 127.0.0.1, Debian's
chromium driven by Playwright, and axe-core checking each page against WCAG 2 A and AA.

Without chromium, Python Playwright or axe-core (npm ci --prefix tests/browser) these tests skip
and say why; with FEEDBACK_REQUIRE_BROWSER=1 (CI) they fail instead, so CI cannot pass by skipping."""
from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from tests.e2e.test_newcomer import dev_server

try:
    from playwright.sync_api import expect
except ImportError:  # the browser fixture says why the tests cannot run (and fails them in CI)
    expect = None

CHROMIUM = "/usr/bin/chromium"  # Debian's package; Playwright's own browser download is never used
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic"]
AXE = Path(__file__).parent / "node_modules" / "axe-core" / "axe.min.js"
PASSWORD = "a long enough password"
TIMEOUT_MS = 10_000  # any one click, fill or wait in the browser


def _unavailable() -> str | None:
    """Why the browser tests cannot run here, or None."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "Python playwright is missing: pip install -e '.[test]'"
    if not os.access(CHROMIUM, os.X_OK):
        return f"{CHROMIUM} is missing: apt-get install -y chromium chromium-driver"
    if not AXE.is_file():
        return "tests/browser/node_modules/axe-core is missing: npm ci --prefix tests/browser"
    return None


@pytest.fixture(scope="package")
def browser():
    """Headless chromium, shared by the session; each test opens contexts of its own."""
    reason = _unavailable()
    if reason:
        if os.environ.get("FEEDBACK_REQUIRE_BROWSER") == "1":
            pytest.fail(f"browser tests are required here (FEEDBACK_REQUIRE_BROWSER=1), but {reason}")
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True, timeout=30_000)
        yield browser
        browser.close()


@pytest.fixture(scope="package")
def site(browser, app, settings, tmp_path_factory):
    """The service as a newcomer runs it, web and worker, on the session's (initialised) database:
    (base URL, console outbox file). Stopped after these tests: a second worker left running would
    take other tests' sends."""
    tmp = tmp_path_factory.mktemp("browser")
    outbox = tmp / "outbox.jsonl"
    env = {**os.environ, **settings, "FEEDBACK_CONSOLE_OUTBOX": str(outbox)}
    with dev_server(env, tmp) as base:
        yield base, outbox


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A failing test that used the server shows the end of the server's log (a 500's traceback)."""
    outcome = yield
    report = outcome.get_result()
    if report.when == "call" and report.failed and "site" in getattr(item, "funcargs", {}):
        log = item.funcargs["site"][1].parent / "server.log"
        if log.exists():
            report.sections.append(("server log, last 60 lines", "\n".join(log.read_text().splitlines()[-60:])))


@pytest.fixture(scope="session")
def cli(app):
    """`feedback-service ARGS...` through the real CLI group, on the session's database; its stdout."""
    def run(*args: str) -> str:
        result = app.test_cli_runner().invoke(args=list(args))
        assert result.exit_code == 0, result.output
        return result.stdout
    return run


@pytest.fixture
def new_page(browser):
    """new_page() -> a page in a fresh browser context (its own cookies, like another person's browser)."""
    contexts = []

    def make():
        # bypass_csp: axe is injected as an inline script, which a strict policy would refuse.
        context = browser.new_context(bypass_csp=True, viewport={"width": 1280, "height": 900})
        context.set_default_timeout(TIMEOUT_MS)
        context.set_default_navigation_timeout(TIMEOUT_MS)
        contexts.append(context)
        return context.new_page()
    yield make
    for context in contexts:
        context.close()


def sign_in(page, base: str, email: str, password: str = PASSWORD):
    """Sign in through the /login form, as a person would."""
    page.goto(f"{base}/login")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    expect(page, f"signing in as {email} failed").not_to_have_url(re.compile(r"/login\b"))


def axe(page) -> list[dict]:
    """Run axe-core (WCAG 2 A and AA rules) on the page and every frame in it; the violations."""
    source = AXE.read_text()
    for frame in page.frames:  # axe checks a frame's content only when axe is loaded there too
        frame.add_script_tag(content=source)
    return page.evaluate("""() => axe.run(document, {runOnly: {type: 'tag', values: ['wcag2a', 'wcag2aa']}})
                               .then(result => result.violations)""")


def describe(violations: list[dict]) -> str:
    lines = []
    for v in violations:
        lines.append(f"- {v['id']} ({v['impact']}): {v['help']}")
        for node in v["nodes"][:10]:
            summary = " ".join((node.get("failureSummary") or "").split())
            lines.append(f"    {node['target']}: {summary}")
    return "\n".join(lines)


def assert_accessible(page, what: str) -> list[dict]:
    """No axe violation of any impact on the page (minor ones included)."""
    violations = axe(page)
    assert not violations, f"axe on {what} ({page.url}):\n{describe(violations)}"
    return violations
