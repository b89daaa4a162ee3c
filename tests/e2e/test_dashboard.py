"""The dashboard in real headless Chromium against a real server: signing in, builds going green on
open pages without a reload, the build page's buttons by role and CSRF, escaping of what a pusher
wrote, and the job log's colours, line links and cut."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Locator, expect

from tests.support.browser import chromium, visitor
from tests.support.engine import BUSYBOX
from tests.support.git import make_repo
from tests.support.server import CiServer
from tests.support.services import redis_database

# One database is enough here: the pages read the API's own store queries, which the API's tests run on both
# databases.
ONE_DATABASE = True

LOG_CAP = 4096  # the server's CISERVER_LOG_MAX_BYTES: a log past it keeps 2 KiB of head and tail

SLOW = f"""\
image: {BUSYBOX}
stages: [test, build]
jobs:
  unit:
    stage: test
    script: [echo testing, sleep 3, echo tested]
  package:
    stage: build
    script: [echo packaged]
  publish:
    stage: build
    when: manual
    script: [echo published]
"""

COLOURS = f"""\
image: {BUSYBOX}
jobs:
  colours:
    script:
      - printf '\\033[31mred\\033[0m plain \\033[1;32mbold green\\033[0m\\n'
      - printf 'title\\033]0;a window title\\007 kept\\033[2K\\n'
      - printf 'third line\\n'
"""

LONG = f"""\
image: {BUSYBOX}
jobs:
  chatty:
    script: [seq 1 3000]
"""


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, redis_url: str, busybox_image: str, e2e_database: str
) -> Iterator[CiServer]:
    """A server of the dashboard's own, with a small log cap, on a Redis database no other test uses."""
    root = tmp_path_factory.mktemp("dashboard")
    server = CiServer(root, redis_database(redis_url, 2), CISERVER_LOG_MAX_BYTES=str(LOG_CAP))
    server.start(workers=2)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as found:
        yield found


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("screenshots")


def project(server: CiServer, tmp_path: Path, pipeline: str) -> tuple[str, str]:
    name = f"acme/d{uuid.uuid4().hex[:8]}"
    sha = make_repo(tmp_path / "repo", {"pipelines.yml": pipeline, "README": "hi\n"})
    server.add_project(name, tmp_path / "repo")
    return name, sha


def pushed(server: CiServer, name: str, sha: str, **fields: str) -> int:
    response = server.push_github(name, sha, **fields)
    assert response.status_code == 202, response.text
    return int(response.json()["build_id"])


def test_a_page_without_a_session_asks_to_sign_in_and_a_token_opens_it(
    server: CiServer, browser: Browser, shots: Path
) -> None:
    with visitor(browser, server.url, "", shots) as you:
        page = you.open("/builds/1")
        assert page.url.startswith(server.url + "/login?next=")
        page.fill("#token", "cis_not-a-token")
        page.click("button[type=submit]")
        expect(page.locator(".error")).to_contain_text("token: unknown, revoked or expired")
        you.screenshot("login")
        page.fill("#token", server.token_for("viewer"))
        page.click("button[type=submit]")
        page.wait_for_url(server.url + "/builds/1")  # back where it was sent from
        cookie = next(c for c in page.context.cookies() if c["name"] == "ciserver_session")
        assert (cookie["httpOnly"], cookie["sameSite"]) == (True, "Strict")
        assert page.evaluate("document.cookie") == ""  # no script can read the session
        page.click("text=Sign out")
        page.wait_for_url(server.url + "/login")
        you.open("/")
        assert page.url.startswith(server.url + "/login")


def test_a_link_from_another_site_opens_the_page_of_a_signed_in_browser(
    server: CiServer, browser: Browser, shots: Path, tmp_path: Path
) -> None:
    # The commit status on the forge links to the build page; the SameSite=Strict cookie stays
    # behind on that first request, and the page must open all the same, with no second sign-in.
    name, sha = project(server, tmp_path, SLOW.replace("sleep 3", "echo quick"))
    build_id = pushed(server, name, sha)
    with visitor(browser, server.url, server.token_for("viewer"), shots) as you:
        page = you.page
        asked: list[str] = []
        page.on("request", lambda r: asked.append(r.url) if r.url.endswith(f"/builds/{build_id}") else None)
        page.goto("about:blank")  # a page of no site of ours: the forge
        page.set_content(f'<a id="status" href="{server.url}/builds/{build_id}">details</a>')
        page.click("#status")
        page.wait_for_url(f"{server.url}/builds/{build_id}")
        expect(page.locator("h1")).to_contain_text(f"Build #{build_id}")
        assert len(asked) == 2  # the forge's request without the cookie, then the page's own
        page.click("text=Sign out")
        page.goto("about:blank")
        page.set_content(f'<a id="status" href="{server.url}/builds/{build_id}">details</a>')
        page.click("#status")
        page.wait_for_url(re.compile(re.escape(server.url) + "/login"))


def test_a_push_goes_green_on_the_open_builds_and_build_pages_without_a_reload(
    server: CiServer, browser: Browser, shots: Path, tmp_path: Path
) -> None:
    name, sha = project(server, tmp_path, SLOW)
    with visitor(browser, server.url, server.token_for("viewer"), shots) as you:
        builds = you.open(f"/?project={name}")
        expect(builds.locator("td.empty")).to_be_visible()
        builds.evaluate("window.notReloaded = true")
        build_id = pushed(server, name, sha, message="Add the unit tests\n\nwith a body")
        row = builds.locator(f"tr[data-build-id='{build_id}']")
        expect(row.locator(".status")).to_have_text(re.compile("queued|running"))
        expect(row).to_contain_text("Add the unit tests")
        expect(row).to_contain_text(sha[:8])

        build = you.page.context.new_page()
        build.goto(f"{server.url}/builds/{build_id}")
        build.evaluate("window.notReloaded = true")
        unit = build.locator("li.job[data-job-name='unit']")
        package = build.locator("li.job[data-job-name='package']")
        expect(package.locator(".why")).to_have_text("waiting for unit")
        expect(unit.locator(".status")).to_have_text(re.compile("queued|running"))
        you.page = build
        you.screenshot("build-running")

        expect(build.locator("h1 .status")).to_have_text("success", timeout=60_000)
        expect(package.locator(".status")).to_have_text("success")
        expect(row.locator(".status")).to_have_text("success", timeout=10_000)
        assert builds.evaluate("window.notReloaded") and build.evaluate("window.notReloaded")
        publish = build.locator("li.job[data-job-name='publish']")
        expect(publish.locator(".why")).to_have_text("manual: waits for someone to start it")
        assert build.locator("main button").count() == 0  # a viewer's page: no Retry, Cancel or Play
        you.screenshot("build")
        you.page = builds
        you.screenshot("builds")
    assert server.build(build_id)["status"] == "success"
    with visitor(browser, server.url, server.token_for("developer"), shots) as developer:
        page = developer.open(f"/builds/{build_id}")
        publish = page.locator("li.job[data-job-name='publish']")
        publish.locator("button", has_text="Play").click()
        expect(publish.locator(".status")).to_have_text("success", timeout=60_000)
        expect(page.locator("h1 .status")).to_have_text("success")
    assert {j["name"]: j["status"] for j in server.build(build_id)["jobs"]}["publish"] == "success"


HOSTILE = f"""\
image: {BUSYBOX}
jobs:
  "<img src=x onerror=alert(4)>":
    script: ["echo '<script>alert(5)</script>'"]
"""


def test_what_a_pusher_wrote_shows_as_text_and_runs_nothing(
    server: CiServer, browser: Browser, shots: Path, tmp_path: Path
) -> None:
    # git refuses spaces in a ref: the branch uses the form that needs none.
    branch = "<svg/onload=alert(1)>"
    message = "<img src=x onerror=alert(2)> <script>alert(3)</script>"
    job_name = "<img src=x onerror=alert(4)>"
    name, sha = project(server, tmp_path, HOSTILE)
    build = server.wait_build(pushed(server, name, sha, ref=f"refs/heads/{branch}", message=message))
    assert build["status"] == "success", build
    job_id = build["jobs"][0]["id"]
    with visitor(browser, server.url, server.token_for("viewer"), shots) as you:
        for path in (f"/?project={name}", f"/?branch={branch}", f"/builds/{build['id']}"):
            page = you.open(path)
            expect(page.get_by_text(branch).first).to_be_visible()
            expect(page.get_by_text(message).first).to_be_attached()
            assert page.locator("main svg, main img, main script").count() == 0
        expect(page.get_by_text(job_name)).to_be_visible()
        you.screenshot("escaped")
        page = you.open(f"/jobs/{job_id}")
        expect(page.get_by_role("heading", name=job_name)).to_be_visible()
        expect(page.locator(".lt", has_text=re.compile(r"^<script>alert\(5\)</script>$"))).to_have_count(1)
        assert page.locator("main svg, main img, main script, #log script").count() == 0
        assert you.dialogs == []
        # Were the escaping ever to fail, the page's policy still refuses inline script.
        page.evaluate("document.body.insertAdjacentHTML('beforeend', '<img src=x onerror=alert(6)>')")
        page.wait_for_function("document.querySelector('body > img') !== null")
        page.wait_for_timeout(500)
        refused = [line for line in you.console if "Content Security Policy" in line]
        assert refused and you.dialogs == []
        you.console = [line for line in you.console if line not in refused]


def test_a_viewer_sees_no_buttons_and_a_write_without_the_csrf_token_is_refused(
    server: CiServer, browser: Browser, shots: Path, tmp_path: Path
) -> None:
    name, sha = project(server, tmp_path, SLOW.replace("sleep 3", "sleep 30"))
    build_id = pushed(server, name, sha)
    with visitor(browser, server.url, server.token_for("viewer"), shots) as viewer:
        page = viewer.open(f"/builds/{build_id}")
        expect(page.locator("h1")).to_contain_text(f"Build #{build_id}")
        assert page.locator("main button").count() == 0
        refused = page.evaluate(
            f"fetch('/api/v1/builds/{build_id}/cancel', {{method: 'POST', headers: {{'X-CSRF-Token':"
            " document.querySelector('meta[name=csrf-token]').content}}).then(r => r.status)"
        )
        assert refused == 403  # the right CSRF token, but a viewer's role
    with visitor(browser, server.url, server.token_for("developer"), shots) as developer:
        page = developer.open(f"/builds/{build_id}")
        forged = page.evaluate(
            f"fetch('/api/v1/builds/{build_id}/cancel', {{method: 'POST'}}).then(r => r.text())"
        )
        assert "X-CSRF-Token" in forged
        assert server.build(build_id)["status"] in ("queued", "running")
        cookie = {c["name"]: c["value"] for c in page.context.cookies()}
        # Another site's form: the cookie (were it sent) without the page's token.
        answer = httpx.post(f"{server.url}/api/v1/builds/{build_id}/retry", cookies=cookie)
        assert answer.status_code == 403
        page.click("button:has-text('Cancel')")
        expect(page.locator("h1 .status")).to_have_text("canceled", timeout=30_000)
    assert server.build(build_id)["status"] == "canceled"
    # Bearer tokens work as before, with no CSRF token.
    assert server.http.post(f"/api/v1/builds/{build_id}/retry").status_code == 202


def test_a_job_log_shows_colours_line_numbers_and_links_to_a_line(
    server: CiServer, browser: Browser, shots: Path, tmp_path: Path
) -> None:
    name, sha = project(server, tmp_path, COLOURS)
    build = server.wait_build(pushed(server, name, sha))
    job_id = build["jobs"][0]["id"]
    with visitor(browser, server.url, server.token_for("viewer"), shots) as you:
        page = you.open(f"/jobs/{job_id}#L2")

        def line(text: str) -> Locator:
            exact = page.locator(".lt", has_text=re.compile(f"^{re.escape(text)}$"))
            return page.locator(".line").filter(has=exact)

        coloured = line("red plain bold green")
        expect(coloured).to_have_count(1)
        expect(coloured.locator("span.fg1")).to_have_text("red")
        expect(coloured.locator("span.b.fg2")).to_have_text("bold green")
        expect(line("title kept")).to_have_count(1)  # the window title and the erase dropped
        expect(line("third line")).to_have_count(1)
        assert "\x1b" not in page.locator("#log").inner_text()
        number = coloured.locator("a.ln")
        assert number.get_attribute("href") == "#" + str(coloured.get_attribute("id"))
        expect(page.locator(".line.hl")).to_have_attribute("id", "L2")  # the line the address named
        expect(page.locator("#L2")).to_be_in_viewport()
        number.click()
        expect(page.locator(".line.hl")).to_have_attribute("id", str(coloured.get_attribute("id")))
        assert page.url.endswith("#" + str(coloured.get_attribute("id")))
        you.screenshot("job-log")


def test_a_cut_log_shows_its_head_and_tail_and_says_what_was_cut(
    server: CiServer, browser: Browser, shots: Path, tmp_path: Path
) -> None:
    name, sha = project(server, tmp_path, LONG)
    build = server.wait_build(pushed(server, name, sha))
    job_id = build["jobs"][0]["id"]
    with visitor(browser, server.url, server.token_for("viewer"), shots) as you:
        page = you.open(f"/jobs/{job_id}")
        expect(page.locator("#log-cut")).to_contain_text("This log was cut")
        expect(page.locator(".line.cut")).to_contain_text("bytes of output cut here")
        expect(page.locator("#L2 .lt")).to_have_text("1")  # after the command line, "$ seq 1 3000"
        expect(page.locator(".line").last.locator(".lt")).to_have_text("3000")
        page.locator(".line.cut").scroll_into_view_if_needed()
        you.screenshot("job-log-cut", full_page=False)


def test_the_builds_page_lists_every_project_and_filters_by_status(
    server: CiServer, browser: Browser, shots: Path
) -> None:
    # Run last in this module: the builds of the tests above are what it lists.
    every = server.http.get("/api/v1/builds", params={"limit": 500}).json()["items"]
    assert len({b["project"] for b in every}) >= 3
    with visitor(browser, server.url, server.token_for("viewer"), shots) as you:
        page = you.open("/")
        rows = page.locator("tr[data-build-id]")
        expect(rows).to_have_count(len(every))
        assert rows.first.get_attribute("data-build-id") == str(max(b["id"] for b in every))
        you.screenshot("builds-all")
        page.select_option("select[name=status]", "canceled")
        page.click("button:has-text('Filter')")
        page.wait_for_url(re.compile(r"status=canceled"))
        canceled = [b["id"] for b in every if b["status"] == "canceled"]
        expect(rows).to_have_count(len(canceled))
        assert canceled and all(
            s == "canceled" for s in page.locator("tr[data-build-id] .status").all_inner_texts()
        )


SCRIPT = Path(__file__).resolve().parents[2] / "ciserver" / "web" / "static" / "dashboard.js"

FEED = """(lines) => {
  const view = new LogView(document.getElementById("log"));
  let text = "";
  for (let n = 1; n <= lines; n += 1) {
    text += `\\x1b[32mline ${n}\\x1b[0m of a long log, padded to about sixty bytes ....\\n`;
    if (text.length > 60000) { view.add(text); text = ""; }
  }
  view.add(text);
  view.finish();
  return view.count;
}"""


def test_a_huge_log_shows_its_head_and_its_latest_lines_with_the_numbers_of_the_whole(
    browser: Browser,
) -> None:
    # 100,000 lines (6 MiB) in the page would take the browser many seconds; it keeps 1 MiB of head
    # and the last 5,000 lines, and says which lines it leaves out.
    page = browser.new_page()
    try:
        page.set_content('<div id="log" class="log"></div>')
        page.add_script_tag(content=SCRIPT.read_text())
        started = time.monotonic()
        assert page.evaluate(FEED, 100_000) == 100_000
        assert time.monotonic() - started < 10
        assert page.locator("#L1 .lt").inner_text().startswith("line 1 of")
        assert page.locator("#L100000 .lt").inner_text().startswith("line 100000 of")
        first_tail = 100_000 - 5_000 + 1
        assert page.locator(f"#L{first_tail} .lt").inner_text().startswith(f"line {first_tail} of")
        assert page.locator(f"#L{first_tail - 1}").count() == 0
        assert page.locator("#log .line").count() < 25_000
        gap = page.locator(".line.gap").inner_text()
        assert re.search(rf"lines \d+ to {first_tail - 1} \(about [\d,]+ bytes\) are not shown", gap), gap
    finally:
        page.close()
