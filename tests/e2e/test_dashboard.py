"""The dashboard in a real headless browser: Debian's chromium driven by Selenium.

A real broker with --http-port, real workers, real tasks; every wait is on the page's DOM or a
process's output. One browser for the module (starting chromium is the slow part). `make test`
installs chromium and chromium-driver first (apt-get), as it does node for the Node examples.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.wait import WebDriverWait

from client import Celeriac
from tests.e2e import tasks
from tests.support import BrokerProcess, WorkerProcess

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
DASHBOARD_URL = r"dashboard on (http://\S+)/ "
WAIT = 30.0

pytestmark = pytest.mark.skipif(
    not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()),
    reason="needs Debian's chromium and chromium-driver (make test installs them)",
)


@pytest.fixture(scope="module")
def browser() -> Iterator[webdriver.Chrome]:
    """One headless chromium for the module; Selenium Manager is never asked for a driver."""
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(argument)
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    try:
        yield driver
    finally:
        driver.quit()


def wait_until(driver: webdriver.Chrome, condition: Callable[[webdriver.Chrome], object]) -> None:
    """Wait until ``condition`` is truthy; elements replaced meanwhile just mean 'not yet'."""

    def check(d: webdriver.Chrome) -> object:
        try:
            return condition(d)
        except (NoSuchElementException, StaleElementReferenceException):
            return False

    WebDriverWait(driver, WAIT).until(check)


def css(driver: webdriver.Chrome, selector: str) -> WebElement:
    return driver.find_element(By.CSS_SELECTOR, selector)


def texts(driver: webdriver.Chrome, selector: str) -> list[str]:
    return [element.text for element in driver.find_elements(By.CSS_SELECTOR, selector)]


def open_dashboard(driver: webdriver.Chrome, url: str, page: str = "#/") -> None:
    """Load the dashboard and wait until its live events stream is open."""
    driver.get(f"{url}/{page}")
    wait_until(driver, lambda d: css(d, "#stream-state").get_attribute("data-state") == "open")


@pytest.fixture
def dashboard() -> Iterator[tuple[BrokerProcess, str]]:
    """A broker (no tokens) with its HTTP port on, and the dashboard's URL."""
    with BrokerProcess("--memory-only", "--http-port", "0") as broker:
        url = broker.wait_for_line(DASHBOARD_URL).group(1)
        app = Celeriac("dashboard-client", broker=broker.address, connect_timeout=5)
        tasks.app.conf = app.conf
        try:
            yield broker, url
        finally:
            tasks.app.close()
            app.close()


def test_pages_show_tasks_workers_and_live_events(
    browser: webdriver.Chrome, dashboard: tuple[BrokerProcess, str]
) -> None:
    broker, url = dashboard
    release = Path(tempfile.mkdtemp(prefix="celeriac-dashboard-")) / "release"
    with WorkerProcess(broker.address, "tests.e2e.tasks", "--concurrency", "2") as worker:
        ran = tasks.add.delay(2, 3)
        assert ran.get(timeout=20) == 5
        open_dashboard(browser, url)
        # Live: a task run now appears in the events list without a reload.
        live = tasks.add.delay(20, 22)
        wait_until(
            browser,
            lambda d: css(d, f'#events li[data-task-id="{live.id}"][data-kind="succeeded"]'),
        )
        # A worker's running task is listed under it while it runs.
        held = tasks.wait_for_release.delay(str(release))
        worker.wait_for_line(f"RUNNING {held.id}")
        wait_until(browser, lambda d: held.id in css(d, "#workers tbody").text)
        assert "tests.e2e.tasks.wait_for_release" in css(browser, "#workers tbody").text
        release.touch()
        assert held.get(timeout=20) == "released"
        # A queue no worker consumes holds a task; its arguments are shown decoded.
        waiting = tasks.add.apply_async((7,), {"y": 8}, queue="nobody-consumes")
        wait_until(
            browser,
            lambda d: (
                texts(d, '#queues tr[data-queue="nobody-consumes"] td')[1:4] == ["1", "0", "0"]
            ),
        )
        assert browser.find_elements(By.CSS_SELECTOR, "#plot-throughput polyline")
    # The task that just ran, looked up by id through the form.
    lookup = css(browser, "#lookup-id")
    lookup.send_keys(ran.id)
    css(browser, "#lookup button").click()
    wait_until(browser, lambda d: css(d, '#task tr[data-field="state"] td').text == "SUCCESS")
    assert css(browser, '#task tr[data-field="name"] td').text == "tests.e2e.tasks.add"
    assert css(browser, '#task tr[data-field="result"] td').text == "5"
    browser.get(f"{url}/#/tasks/{waiting.id}")
    wait_until(browser, lambda d: css(d, '#task tr[data-field="state"] td').text == "PENDING")
    arguments = css(browser, '#task tr[data-field="arguments"] td').text
    assert json.loads(arguments.split("kwargs")[0].removeprefix("args")) == [7]
    assert json.loads(arguments.split("kwargs")[1]) == {"y": 8}


def test_dead_letters_are_requeued_and_purged_in_the_browser(
    browser: webdriver.Chrome, dashboard: tuple[BrokerProcess, str]
) -> None:
    broker, url = dashboard
    with WorkerProcess(broker.address, "tests.e2e.tasks", "--queues", "fragile"):
        first = tasks.fail.apply_async(("first",), queue="fragile")
        second = tasks.fail.apply_async(("second",), queue="fragile")
        for result in (first, second):
            with pytest.raises(Exception, match=r"first|second"):
                result.get(timeout=20)
    # No worker now: a requeued task waits in its queue, where the page shows it.
    open_dashboard(browser, url, "#/dead-letters")
    wait_until(browser, lambda d: css(d, "#dead-total").text == "2")
    row = css(browser, f'#dead tr[data-task-id="{first.id}"]')
    assert "first" in row.text
    row.find_element(By.CSS_SELECTOR, "button.requeue").click()
    wait_until(browser, lambda d: css(d, "#dead-done").text == "requeued 1")
    wait_until(browser, lambda d: css(d, "#dead-total").text == "1")
    css(browser, f'#dead tr[data-task-id="{second.id}"] button.purge').click()
    browser.switch_to.alert.accept()
    wait_until(browser, lambda d: css(d, "#dead-done").text == "purged 1")
    wait_until(browser, lambda d: css(d, "#dead-total").text == "0")
    browser.get(f"{url}/#/")
    wait_until(browser, lambda d: texts(d, '#queues tr[data-queue="fragile"] td')[1:2] == ["1"])
    browser.get(f"{url}/#/tasks/{first.id}")
    wait_until(browser, lambda d: css(d, '#task tr[data-field="state"] td').text == "PENDING")


ADMIN_TOKEN = "admin-token-0123456789abcdef"
MONITOR_TOKEN = "monitor-token-0123456789abcdef"
PRODUCER_TOKEN = "producer-token-0123456789abcdef"


def http(
    url: str, token: str = "", method: str = "GET", body: bytes | None = None, change: bool = False
) -> tuple[int, bytes]:
    """The status and body of one request (errors included)."""
    request = urllib.request.Request(url, data=body, method=method)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    if change:
        request.add_header("X-Celeriac-Dashboard", "1")
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def test_with_tokens_the_dashboard_and_metrics_need_a_role(browser: webdriver.Chrome) -> None:
    tokens = f"admin:ops:{ADMIN_TOKEN} monitor:prom:{MONITOR_TOKEN} producer:web:{PRODUCER_TOKEN}"
    env = {"CELERIAC_BROKER_TOKENS": tokens}
    with BrokerProcess("--memory-only", "--http-port", "0", env=env) as broker:
        url = broker.wait_for_line(DASHBOARD_URL).group(1)
        requeue = f"{url}/api/dead-letters/requeue"
        everything = json.dumps({"all": True}).encode()

        status, body = http(f"{url}/api/overview")
        assert (status, json.loads(body)["reason"]) == (401, "UNAUTHENTICATED")
        assert http(f"{url}/metrics")[0] == 401
        assert http(f"{url}/api/events")[0] == 401
        assert http(f"{url}/metrics", PRODUCER_TOKEN)[0] == 403
        status, body = http(f"{url}/metrics", MONITOR_TOKEN)
        assert status == 200 and b"celeriac_workers" in body
        assert http(f"{url}/api/overview", MONITOR_TOKEN)[0] == 200
        status, body = http(requeue, MONITOR_TOKEN, "POST", everything, change=True)
        assert (status, json.loads(body)["reason"]) == (403, "PERMISSION_DENIED")
        status, body = http(requeue, ADMIN_TOKEN, "POST", everything)  # no change header
        assert status == 403 and "X-Celeriac-Dashboard" in json.loads(body)["error"]
        status, body = http(requeue, ADMIN_TOKEN, "POST", everything, change=True)
        assert (status, json.loads(body)) == (200, {"requeued": 0})

        # The browser logs in with a read-only token: the pages show, the changes do not.
        browser.delete_all_cookies()
        browser.get(f"{url}/")
        wait_until(browser, lambda d: css(d, "#page-login").is_displayed())
        css(browser, "#token").send_keys(PRODUCER_TOKEN)
        css(browser, "#login-form button").click()
        wait_until(browser, lambda d: "needs admin or monitor" in css(d, "#error").text)
        token_field = css(browser, "#token")
        token_field.clear()
        token_field.send_keys(MONITOR_TOKEN)
        css(browser, "#login-form button").click()
        wait_until(browser, lambda d: css(d, "#stream-state").get_attribute("data-state") == "open")
        assert css(browser, "#who").text == "prom (monitor)"
        browser.get(f"{url}/#/dead-letters")
        wait_until(browser, lambda d: css(d, "#page-dead").is_displayed())
        assert not css(browser, "#requeue-all").is_displayed()
        cookie = browser.get_cookie("celeriac_session")
        assert cookie is not None and cookie["httpOnly"] and cookie["sameSite"] == "Strict"
        css(browser, "#logout").click()
        wait_until(browser, lambda d: css(d, "#page-login").is_displayed())
        output = broker.output
    for token in (ADMIN_TOKEN, MONITOR_TOKEN, PRODUCER_TOKEN):
        assert token not in output
    assert "dashboard login by token 'prom'" in output
