"""Shared browser fixtures: headless Debian Chromium driven by Playwright.

Test modules import `browser` and `new_page` (pytest finds fixtures imported
into a module) and `log_in`. The app runs under pytest-django's `live_server`,
so browser tests use `transaction=True`. Without /usr/bin/chromium (`make
chromium`, which needs root) the tests are skipped, saying why. Screenshots land
in `test-artifacts/` at the repository root (git-ignored).
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]
PASSWORD = "pw-for-tests"  # tests.factories.make_user's default
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
TIMEOUT_MS = 10_000

# --- browser fixtures -------------------------------------------------------

@pytest.fixture(scope="module")
def browser():
    """One headless Chromium for the module; skipped when Debian's chromium is absent."""
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is not installed (run `make chromium` as root); browser tests skipped")
    from playwright.sync_api import sync_playwright

    # Playwright's sync API runs an asyncio event loop in the main thread, and
    # Django refuses ORM calls from a thread with a running loop unless told;
    # allowed only while this module's browser is up.
    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    playwright = sync_playwright().start()
    try:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
    except Exception:
        playwright.stop()
        raise
    yield browser
    browser.close()
    playwright.stop()
    if previous is None:
        os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
    else:
        os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


@pytest.fixture
def new_page(browser, request):
    """Factory of pages, each in its own browser context (own cookies, own session).

    Uncaught JavaScript errors fail the test; every page's last state is saved as
    test-artifacts/<test>-<n>-final.png for debugging.
    """
    ARTIFACTS.mkdir(exist_ok=True)
    contexts, pages, js_errors = [], [], []

    def make():
        context = browser.new_context(viewport={"width": 1200, "height": 800})
        context.set_default_timeout(TIMEOUT_MS)
        page = context.new_page()
        page.on("pageerror", lambda exc: js_errors.append(str(exc)))
        contexts.append(context)
        pages.append(page)
        return page

    yield make
    for n, page in enumerate(pages):
        try:
            page.screenshot(path=str(ARTIFACTS / f"{request.node.name}-{n}-final.png"), full_page=True)
        except Exception:  # a screenshot is a debugging aid; never mask the test's own result
            pass
    for context in contexts:
        context.close()
    assert not js_errors, f"uncaught JavaScript errors: {js_errors}"


# --- helpers ----------------------------------------------------------------

def log_in(page, live_server, user) -> None:
    """Log in through the real login form, typing the credentials."""
    from playwright.sync_api import expect

    page.goto(f"{live_server.url}/login/")
    page.get_by_label("Username").press_sequentially(user.username)
    page.get_by_label("Password").press_sequentially(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(f"{live_server.url}/")
    expect(page.locator(".topbar .who")).to_have_text(user.username)
