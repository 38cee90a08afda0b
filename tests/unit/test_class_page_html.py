"""The class page's HTML as text: escaping, progress, counts; tests/integration/test_class_page.py
opens it in a real Chromium."""

import re

from labs.classpage import class_html, progress, step_ids
from labs.model import CheckResult
from tests.unit.test_class_view import ADA, BOB, CLASS, CY, DEAD


def test_progress_is_the_steps_passed_in_a_row_and_the_first_not_done():
    steps = step_ids(CLASS)
    assert steps == ["rootfs", "busybox", "container-script"]
    assert progress(ADA, steps) == (3, "")
    assert progress(BOB, steps) == (1, "busybox")
    assert progress(CY, steps) == (0, "rootfs")


def test_student_output_is_escaped_and_terminal_escapes_dropped():
    hostile = CheckResult("busybox.check", "busybox", "fail", "<b>bold</b>", "", 0.1,
                          "\x1b[31m<script>alert(1)</script>\x07")
    bob = type(BOB)(**{**BOB.__dict__, "checks": [BOB.checks[0], hostile, BOB.checks[2]]})
    page = class_html("chroot", [bob, DEAD])
    assert "<script>alert(1)</script>" not in page and "&lt;b&gt;bold&lt;/b&gt;" in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;\ufffd</pre>" in page and "\x1b" not in page
    # The one script the page runs is its own, allowed by its hash; nothing is loaded from elsewhere.
    assert len(re.findall(r"<script", page)) == 1
    assert "default-src 'none'" in page and "script-src 'sha256-" in page
    assert not re.search(r"(src|href)=\"?(https?:)?//", page)


def test_counts_say_where_students_are_stuck_and_failures_stand_apart():
    page = class_html("chroot", CLASS)
    stuck = dict(re.findall(r'<td data-step="([^"]+)">(?:<span class="stuckcount">)?(\d+)', 
                         page.split('class="stuck-counts"')[1].split('class="pass-counts"')[0]))
    assert stuck == {"rootfs": "1", "busybox": "1", "container-script": "0"}
    assert "1 done</td>" in page
    assert re.findall(r'<li class="failure" data-name="([^"]+)"', page) == ["dead", "slow"]
    assert re.findall(r'<tr class="student" data-name="([^"]+)"', page) == ["ada", "bob", "cy"]
