"""The review console in a real Chromium against a real `serve` process.

One reviewer session: sign in, classify a product with an image (top-3 shown), work through
the queue by keyboard (accept with `A`, correct with `/`, a name, `Enter`), and find the
corrections in the feedback table. Every page is screenshotted (RAKUTEN_SCREENSHOT_DIR or
reports/screenshots/) and checked for labelled inputs, visible focus and console errors.
"""

from __future__ import annotations

import csv
import io
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait
from sqlalchemy import select

from console_testing import JWT_SECRET, PASSWORDS
from rakuten_mlops.db.models import Feedback, Prediction
from rakuten_mlops.db.session import make_engine, make_session_factory
from rakuten_mlops.serving.auth import users
from service_testing import ServerProcess, TinyModel, start_serve_process

pytestmark = pytest.mark.slow
REPO_ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
WAIT_S = 20

# Every visible form control has a label (its own <label>, aria-label or aria-labelledby).
UNLABELLED_JS = """
return Array.from(document.querySelectorAll('input, select, textarea'))
  .filter(el => el.type !== 'hidden')
  .filter(el => !(el.labels && el.labels.length) && !el.getAttribute('aria-label')
                && !el.getAttribute('aria-labelledby'))
  .map(el => el.outerHTML.slice(0, 120));
"""
# The focused element draws an outline (or a box shadow) the user can see.
FOCUS_STYLE_JS = """
const el = document.activeElement;
if (!el || el === document.body) return null;
const style = getComputedStyle(el);
return {tag: el.tagName, outline: style.outlineStyle, width: style.outlineWidth,
        shadow: style.boxShadow};
"""
OVERFLOW_JS = "return document.documentElement.scrollWidth - window.innerWidth;"


def screenshot_dir() -> Path:
    """Where the screenshots go (a CI artifact)."""
    configured = os.environ.get("RAKUTEN_SCREENSHOT_DIR")
    path = Path(configured) if configured else REPO_ROOT / "reports" / "screenshots"
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="module")
def console_server(
    tmp_path_factory: pytest.TempPathFactory, console_model: TinyModel
) -> Iterator[tuple[ServerProcess, str]]:
    """A real `serve` process (shared by this module's tests) with a reviewer `rita` and a
    client `carl`; yields it and its database URL."""
    tmp_path = tmp_path_factory.mktemp("console-server")
    database_url = f"sqlite:///{tmp_path}/service.db"
    env = {
        "RAKUTEN_ENV": "test",
        "RAKUTEN_DATABASE_URL": database_url,
        "RAKUTEN_SERVE_MODEL": str(console_model.path),
        "RAKUTEN_JWT_SECRET": JWT_SECRET,
        "RAKUTEN_ADMIN_USERNAME": "admin",
        "RAKUTEN_ADMIN_PASSWORD": PASSWORDS["admin"],
        "RAKUTEN_REVIEW_THRESHOLD": "1.0",  # the tiny model is never sure: all reviewed
        "RAKUTEN_IMAGE_STORE_DIR": str(tmp_path / "images"),
        "RAKUTEN_LOG_FILE": str(tmp_path / "service.log"),
        "RAKUTEN_RATE_LIMIT_PREDICT": "off",
        "RAKUTEN_RATE_LIMIT_TOKEN": "off",
        "RAKUTEN_RATE_LIMIT_API": "off",
        "RAKUTEN_RECORD_FLUSH_MS": "50",
        # Every review goes to a second reviewer: the admin's test reviews one again.
        "RAKUTEN_REVIEW_SECOND_SHARE": "1.0",
        "RAKUTEN_REVIEW_BUDGET_PER_DAY": "200",
    }
    server = start_serve_process(env, tmp_path)
    engine = make_engine(database_url)
    try:
        with make_session_factory(engine)() as session:
            users.create_user(session, "rita", PASSWORDS["rita"], "reviewer")
            users.create_user(session, "carl", PASSWORDS["carl"], "client")
            session.commit()
        yield server, database_url
    finally:
        engine.dispose()
        server.stop()


@pytest.fixture
def browser() -> Iterator[WebDriver]:
    """Headless Chromium through the Debian chromedriver (browser console logs kept)."""
    if not CHROMIUM.exists() or not CHROMEDRIVER.exists() or shutil.which("chromedriver") is None:
        pytest.fail("chromium / chromium-driver missing: run scripts/install-system-deps.sh")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1280,900",
        "--lang=fr-FR",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.implicitly_wait(0)
    try:
        yield driver
    finally:
        driver.quit()


class Page:
    """Small helpers over the driver: waits, checks, screenshots."""

    def __init__(self, driver: WebDriver, base_url: str) -> None:
        self.driver = driver
        self.base_url = base_url
        self.shots: list[Path] = []

    def open(self, path: str) -> None:
        self.driver.get(self.base_url + path)

    def wait(self, condition: Callable[[WebDriver], Any], what: str) -> Any:
        return WebDriverWait(self.driver, WAIT_S).until(condition, message=what)

    def text(self, css: str) -> str:
        return str(self.driver.find_element(By.CSS_SELECTOR, css).text)

    def live_text(self, css: str) -> str | None:
        """Text of an element read in the page (no stale reference across a swap)."""
        script = "const el = document.querySelector(arguments[0]); return el && el.textContent;"
        value = self.driver.execute_script(script, css)
        return None if value is None else str(value).strip()

    def check_page(self, name: str) -> None:
        """Labelled inputs, no console error, then a screenshot named `name`."""
        unlabelled = self.driver.execute_script(UNLABELLED_JS)
        assert unlabelled == [], f"{name}: inputs without a label: {unlabelled}"
        errors = [e for e in self.driver.get_log("browser") if e["level"] == "SEVERE"]
        assert errors == [], f"{name}: browser console errors: {errors}"
        path = screenshot_dir() / f"console-{name}.png"
        assert self.driver.save_screenshot(str(path)), f"{name}: no screenshot"
        self.shots.append(path)

    def check_focus_visible(self) -> None:
        """Tab to the first control and check that its focus is drawn."""
        self.driver.find_element(By.TAG_NAME, "body").send_keys(Keys.TAB)
        style = self.driver.execute_script(FOCUS_STYLE_JS)
        assert style is not None, "Tab focused nothing"
        visible = (style["outline"] != "none" and style["width"] != "0px") or style[
            "shadow"
        ] not in ("none", "")
        assert visible, f"focus not visible: {style}"


def _seed_queue(base_url: str, sample_dir: Path, count: int) -> list[dict[str, Any]]:
    """Classify real titles of the shared sample through the API (as the admin)."""
    titles = pd.read_csv(sample_dir / "X_train_update.csv", nrows=40)["designation"]
    french = [t for t in titles if any(c in t for c in "éèàçôÉ")][:count]
    with httpx.Client(base_url=base_url, timeout=30) as http:
        token = http.post(
            "/token", data={"username": "admin", "password": PASSWORDS["admin"]}
        ).json()["access_token"]
        return [
            http.post(
                "/v1/predict",
                data={"designation": title},
                headers={"Authorization": f"Bearer {token}"},
            ).json()
            for title in french
        ]


def _feedback_rows(database_url: str) -> list[tuple[str, int, str | None, str]]:
    engine = make_engine(database_url)
    try:
        with make_session_factory(engine)() as session:
            rows = session.execute(
                select(Feedback, Prediction.designation)
                .join(Prediction, Prediction.id == Feedback.prediction_id)
                .order_by(Feedback.id)
            ).all()
            return [(fb.prediction_id, fb.prdtypecode, fb.username, title) for fb, title in rows]
    finally:
        engine.dispose()


def test_reviewer_classifies_and_corrects_by_keyboard(
    console_server: tuple[ServerProcess, str],
    browser: WebDriver,
    product_jpeg: Path,
    sample_dir: Path,
) -> None:
    server, database_url = console_server
    page = Page(browser, server.url)

    # Sign in (the console sends a signed-out visitor to the sign-in page).
    page.open("/console/classify")
    page.wait(lambda d: "/console/login" in d.current_url, "sign-in page")
    page.check_page("login")
    page.check_focus_visible()
    browser.find_element(By.ID, "username").send_keys("rita")
    browser.find_element(By.ID, "password").send_keys(PASSWORDS["rita"] + Keys.ENTER)
    page.wait(lambda d: d.current_url.endswith("/console/classify"), "classify page")

    # Classify a product with an image: preview, then the top-3 without leaving the page.
    browser.find_element(By.ID, "designation").send_keys("Piscine tubulaire ronde 3,66 x 0,76 m")
    browser.find_element(By.ID, "description").send_keys("Livrée avec pompe de filtration")
    browser.find_element(By.ID, "image").send_keys(str(product_jpeg))
    page.wait(
        lambda d: (
            d.find_element(By.ID, "preview").is_displayed()
            and d.find_element(By.ID, "preview").get_attribute("src").startswith("blob:")
        ),
        "image preview",
    )
    browser.find_element(By.ID, "description").send_keys(Keys.CONTROL, Keys.ENTER)
    page.wait(
        lambda d: len(d.find_elements(By.CSS_SELECTOR, "#result .top3 li")) == 3, "top-3 result"
    )
    assert browser.current_url.endswith("/console/classify")
    assert page.text("#result .image-used") == "yes"
    assert page.text("#result .category")  # a category name is shown
    page.check_page("classify")

    # Queue: the classified product plus real French titles of the sample.
    seeded = _seed_queue(server.url, sample_dir, 3)
    page.open("/console/queue?order=oldest")
    page.wait(lambda d: d.find_elements(By.ID, "item-title"), "first queue item")
    assert page.text("#left-count") == "4" and page.text("#done-today") == "0"
    first_id = browser.find_element(By.CSS_SELECTOR, "article.item").get_attribute(
        "data-prediction-id"
    )
    assert page.text("#item-title") == "Piscine tubulaire ronde 3,66 x 0,76 m"
    assert browser.find_element(By.CSS_SELECTOR, "img.thumb").get_attribute("naturalWidth") != "0"
    page.check_page("queue")
    page.check_focus_visible()

    # `A` accepts; the next item comes up in place.
    browser.find_element(By.TAG_NAME, "body").send_keys("a")
    page.wait(lambda d: page.live_text("#done-today") == "1", "accepted")
    second_id = browser.find_element(By.CSS_SELECTOR, "article.item").get_attribute(
        "data-prediction-id"
    )
    assert second_id != first_id and second_id == seeded[0]["prediction_id"]
    assert browser.switch_to.active_element.get_attribute("id") == "item-title"

    # `/`, a few letters of a category (accents optional), Enter: corrected.
    browser.find_element(By.TAG_NAME, "body").send_keys("/")
    assert browser.switch_to.active_element.get_attribute("id") == "category-search"
    browser.switch_to.active_element.send_keys("epicerie", Keys.ENTER)
    page.wait(lambda d: page.live_text("#done-today") == "2", "corrected")
    assert page.text("#left-count") == "2"
    # The day's budget panel follows each review.
    assert page.live_text("#budget-done") == "2 / 200"
    assert "estimated right" in page.text("#catalogue-accuracy")
    assert "reviews would fix about" in page.text("#hour-gain")
    page.check_page("queue-after-review")

    rows = _feedback_rows(database_url)
    assert [(r[0], r[1], r[2]) for r in rows] == [
        (first_id, int(rows[0][1]), "rita"),
        (second_id, 1940, "rita"),  # Épicerie, cuisine
    ]
    with httpx.Client(base_url=server.url, timeout=30) as http:
        token = http.post(
            "/token", data={"username": "rita", "password": PASSWORDS["rita"]}
        ).json()["access_token"]
        listed = http.get(
            "/v1/predictions",
            params={"needs_review": "true", "limit": 10},
            headers={"Authorization": f"Bearer {token}"},
        ).json()
    by_id = {item["id"]: item for item in listed["items"]}
    assert rows[0][1] == by_id[first_id]["prdtypecode"]  # accepted = the predicted code

    # History (with undo of the last correction), model page; tablet width.
    page.open("/console/history")
    page.wait(lambda d: d.find_elements(By.ID, "undo-button"), "history")
    assert "Épicerie, cuisine" in browser.page_source
    page.check_page("history")
    browser.find_element(By.ID, "undo-button").click()
    page.wait(lambda d: "correction is undone" in d.page_source, "undo")
    assert len(_feedback_rows(database_url)) == 2  # kept, marked undone
    page.open("/console/model")
    page.wait(lambda d: d.find_elements(By.CSS_SELECTOR, "svg.chart"), "accuracy chart")
    page.check_page("model")
    browser.set_window_size(820, 1180)
    page.open("/console/queue")
    page.wait(lambda d: d.find_elements(By.ID, "item-title"), "queue on a tablet")
    assert browser.execute_script(OVERFLOW_JS) <= 0, "horizontal scrolling on a tablet"
    page.check_page("queue-tablet")
    assert all(path.stat().st_size > 5_000 for path in page.shots)


def test_admin_pages_and_a_client_refused(
    console_server: tuple[ServerProcess, str], browser: WebDriver
) -> None:
    server, _ = console_server
    page = Page(browser, server.url)
    page.open("/console/login")
    browser.find_element(By.ID, "username").send_keys("admin")
    browser.find_element(By.ID, "password").send_keys(PASSWORDS["admin"] + Keys.ENTER)
    page.wait(lambda d: d.current_url.endswith("/console/classify"), "signed in")
    page.open("/console/admin/users")
    page.wait(lambda d: d.find_elements(By.ID, "user-rita"), "users page")
    page.check_page("users")
    page.open("/console/model")
    browser.find_element(By.ID, "reload-button").click()
    page.wait(lambda d: "Reload started" in d.page_source, "reload started")
    page.check_page("model-admin")

    # The admin second-reviews rita's accepted product (drawn: share 1.0) by picking the
    # second of the top 3, then settles the disagreement and exports the audit trail.
    page.open("/console/queue")
    page.wait(lambda d: d.find_elements(By.ID, "second-review"), "a second review first")
    browser.find_element(By.TAG_NAME, "body").send_keys("2")
    page.wait(lambda d: not d.find_elements(By.ID, "second-review"), "second review saved")
    page.open("/console/agreement")
    page.wait(lambda d: d.find_elements(By.ID, "disagreements"), "agreement page")
    assert "admin · rita" in page.text("#pair-table")
    page.check_page("agreement")
    browser.find_element(By.CSS_SELECTOR, "form.settle button").click()
    page.wait(lambda d: "No open disagreement" in d.page_source, "settled")
    audit = browser.execute_script("return await (await fetch('/console/audit.csv')).text();")
    kinds = [row["kind"] for row in csv.DictReader(io.StringIO(audit))]
    assert kinds[-2:] == ["second", "settle"] and kinds.count("review") >= 2
    browser.find_element(By.CSS_SELECTOR, ".signout button").click()
    page.wait(lambda d: "You are signed out." in d.page_source, "signed out")

    browser.find_element(By.ID, "username").send_keys("carl")
    browser.find_element(By.ID, "password").send_keys(PASSWORDS["carl"] + Keys.ENTER)
    page.wait(lambda d: "Not allowed" in d.page_source, "403 page")
    assert "client" in page.text("main")
    # Chromium logs the 403 status of the page itself: the only console error allowed here.
    logged = [e["message"] for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert all("403" in message for message in logged), logged
    page.check_page("forbidden")
