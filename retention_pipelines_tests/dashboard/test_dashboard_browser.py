"""The dashboard in a real browser: ``retention dashboard`` started as a person starts it, on a
free port over the scored warehouse, driven by Playwright in Debian's Chromium; stopped with
Ctrl-C at the end, leaving no process behind.

A screenshot of each page is saved under the test's temporary folder and, when
``RETENTION_SCREENSHOTS_DIR`` is set, into that folder too (how the README's pictures in
``docs/`` are made again).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import httpx
import psycopg
import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from retention_pipelines.core import processes
from retention_pipelines.dashboard import queries
from retention_pipelines.dashboard.queries import CallListFilter
from retention_pipelines_tests.dashboard.warehouse import (
    CHAMPION_VERSION,
    LATEST_DAY,
    ScoredWarehouse,
)
from retention_pipelines_tests.helpers import debian_program
from retention_pipelines_tests.serving.processes import (
    LOOPBACK,
    RETENTION,
    free_port,
    serve_environment,
)

pytestmark = pytest.mark.slow
# Importing Streamlit, pandas and Altair on a busy 2-core host, after the warehouse is prepared.
STARTUP_TIMEOUT_S: Final = 180.0
STOP_TIMEOUT_S: Final = 20.0
PAGE_TIMEOUT_MS: Final = 60_000
CHROMIUM_ARGS: Final = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]


@dataclass
class Dashboard:
    process: subprocess.Popen[bytes]
    url: str
    output: Path

    def output_text(self) -> str:
        return self.output.read_text(encoding="utf-8", errors="replace")


@pytest.fixture(scope="module")
def chromium() -> str:
    return debian_program("chromium", "chromium")


@pytest.fixture(scope="module")
def dashboard(
    scored_warehouse: ScoredWarehouse, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Dashboard]:
    """``retention dashboard --port <free port>`` on the scored warehouse, answering."""
    home = tmp_path_factory.mktemp("dashboard-home")
    port = free_port()
    environment = serve_environment(
        {
            "RETENTION_DATABASE_URL": scored_warehouse.url,
            "RETENTION_HOME_DIR": str(home),
            # No registry here: the command leaves the warehouse's copy of it as it is.
            "RETENTION_MLFLOW_DATABASE": f"retention_test_no_mlflow_{uuid.uuid4().hex[:8]}",
        }
    )
    output = home / "dashboard.log"
    with output.open("wb") as log:
        process = subprocess.Popen(
            [str(RETENTION), "dashboard", "--host", LOOPBACK, "--port", str(port)],
            env=environment,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a session of its own: its children are found by it
        )
    running = Dashboard(process, f"http://{LOOPBACK}:{port}", output)
    try:
        _wait_until_healthy(running)
        yield running
    finally:
        _stop_whatever_is_left(process)


def _wait_until_healthy(dashboard: Dashboard) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if dashboard.process.poll() is not None:
            pytest.fail(f"retention dashboard ended early:\n{dashboard.output_text()}")
        try:
            if httpx.get(f"{dashboard.url}/_stcore/health", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    pytest.fail(f"retention dashboard did not answer in time:\n{dashboard.output_text()}")


def _stop_whatever_is_left(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        processes.terminate([process.pid, *processes.descendants(process.pid)])
    for pid in processes.group_members(process.pid):
        processes.terminate([pid])
    process.wait(timeout=STOP_TIMEOUT_S)


@pytest.fixture(scope="module")
def browser(chromium: str) -> Iterator[Browser]:
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Browser, dashboard: Dashboard) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
    opened = context.new_page()
    opened.set_default_timeout(PAGE_TIMEOUT_MS)
    yield opened
    context.close()


@pytest.fixture(scope="module")
def screenshot(tmp_path_factory: pytest.TempPathFactory) -> Callable[[Page, str], Path]:
    """Save a page's screenshot as ``<name>.png`` (and into RETENTION_SCREENSHOTS_DIR)."""
    folder = tmp_path_factory.mktemp("screenshots")
    extra = os.environ.get("RETENTION_SCREENSHOTS_DIR")

    def save(page: Page, name: str) -> Path:
        path = folder / f"{name}.png"
        page.wait_for_timeout(1_000)  # charts settle after their first paint
        page.screenshot(path=str(path))
        if extra:
            Path(extra).mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, Path(extra) / path.name)
        return path

    return save


def _open(page: Page, dashboard: Dashboard, path: str, title: str) -> None:
    page.goto(f"{dashboard.url}/{path}")
    page.get_by_role("heading", name=title, exact=True).wait_for()


def _metric(page: Page, label: str) -> str:
    metric = page.get_by_test_id("stMetric").filter(has_text=label)
    return metric.get_by_test_id("stMetricValue").inner_text().strip()


def _count(url: str, filters: CallListFilter) -> int:
    with psycopg.connect(url) as conn:
        return queries.call_list_totals(conn, filters).customers


def _first_customer(url: str, filters: CallListFilter) -> str:
    with psycopg.connect(url) as conn:
        return str(queries.call_list_page(conn, filters, 1, 1)["customer_id"].iloc[0])


def _grid_text(page: Page) -> list[str]:
    """The texts of the call list's visible cells (the grid draws on a canvas and keeps an
    accessible copy of its visible cells in the page)."""
    cells = page.locator("[data-testid=stDataFrame] [role=gridcell]")
    cells.first.wait_for(state="attached")
    return [text or "" for text in cells.all_text_contents()]


def _grid_settles(page: Page, holds: Callable[[list[str]], bool], timeout_s: float = 30) -> bool:
    """Whether the grid's cells come to satisfy ``holds`` (the grid redraws a moment after
    the rest of the page)."""
    deadline = time.monotonic() + timeout_s
    while not holds(_grid_text(page)):
        if time.monotonic() > deadline:
            return False
        page.wait_for_timeout(250)
    return True


def test_the_call_list_renders_the_latest_customers_in_risk_order(
    page: Page,
    dashboard: Dashboard,
    scored_warehouse: ScoredWarehouse,
    screenshot: Callable[[Page, str], Path],
) -> None:
    _open(page, dashboard, "", "Call list")
    cells = _grid_text(page)
    assert _first_customer(scored_warehouse.url, CallListFilter()) in cells
    assert len(cells) >= 12 * 5  # several rows of the twelve columns
    assert _metric(page, "Customers selected") == f"{scored_warehouse.latest_customers:,}"
    screenshot(page, "call_list")


def test_a_filter_narrows_the_list_and_the_csv_downloads_the_filtered_rows(
    page: Page, dashboard: Dashboard, scored_warehouse: ScoredWarehouse
) -> None:
    _open(page, dashboard, "", "Call list")
    everyone = _metric(page, "Customers selected")
    page.get_by_role("combobox", name="Risk band").click()
    page.get_by_role("option", name="low", exact=True).click()
    page.keyboard.press("Escape")
    low = CallListFilter(bands=("low",))
    expected = _count(scored_warehouse.url, low)
    link = page.get_by_role("link", name=f"Download the CSV ({expected:,} customers)")
    link.wait_for()
    assert _metric(page, "Customers selected") == f"{expected:,}" != everyone
    assert _grid_settles(page, lambda cells: "low" in cells and "high" not in cells)
    with page.expect_download() as download:
        link.click()
    lines = Path(download.value.path()).read_text(encoding="utf-8").splitlines()
    assert lines[0] == ",".join(queries.EXPORT_COLUMNS)
    assert len(lines) - 1 == expected
    assert {line.split(",")[4] for line in lines[1:]} == {"low"}  # risk_band


def test_the_export_route_answers_beside_the_app(dashboard: Dashboard) -> None:
    response = httpx.get(f"{dashboard.url}/export/call-list.csv?band=purple", timeout=30)
    assert (response.status_code, response.text.strip()) == (
        400,
        "bad filter: unknown risk band 'purple': choose from high, medium, low",
    )


def test_a_customer_page_shows_the_reason_chart_and_history(
    page: Page,
    dashboard: Dashboard,
    scored_warehouse: ScoredWarehouse,
    screenshot: Callable[[Page, str], Path],
) -> None:
    customer = scored_warehouse.history_customer
    _open(page, dashboard, f"customer?customer_id={customer}", "Customer")
    chart = page.get_by_test_id("stVegaLiteChart").first
    chart.locator("svg").first.wait_for()
    text = chart.inner_text() + chart.locator("svg").first.text_content()
    assert "Contribution to the risk" in text
    assert "raises risk" in text or "lowers risk" in text
    assert _metric(page, "Scored on") == str(LATEST_DAY)
    screenshot(page, "customer")


def test_trends_draw_their_three_charts(
    page: Page, dashboard: Dashboard, screenshot: Callable[[Page, str], Path]
) -> None:
    _open(page, dashboard, "trends", "Trends")
    page.get_by_test_id("stVegaLiteChart").nth(2).locator("svg").first.wait_for()
    assert page.get_by_test_id("stVegaLiteChart").count() == 3
    screenshot(page, "trends")


def test_model_health_shows_the_champion_and_the_red_banner(
    page: Page, dashboard: Dashboard, screenshot: Callable[[Page, str], Path]
) -> None:
    _open(page, dashboard, "model_health", "Model health")
    assert _metric(page, "Champion version") == CHAMPION_VERSION
    banner = page.get_by_test_id("stAlertContentError")
    assert f"Data drift on {LATEST_DAY}" in banner.inner_text()
    screenshot(page, "model_health")


def test_ctrl_c_stops_the_dashboard_and_every_process_it_started(dashboard: Dashboard) -> None:
    started = processes.descendants(dashboard.process.pid)
    assert any("streamlit" in processes.command_line(pid) for pid in started)
    named = [processes.process_name(pid) for pid in started]
    dashboard.process.send_signal(signal.SIGINT)
    assert dashboard.process.wait(timeout=STOP_TIMEOUT_S) == 0, dashboard.output_text()
    deadline = time.monotonic() + 5
    while not all(processes.is_gone(name) for name in named) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert all(processes.is_gone(name) for name in named)
    assert "dashboard stopped" in dashboard.output_text()
