"""Shared fixtures. Browser tests drive Debian's chromium (Playwright cannot download its own here)."""

import os

import pytest
import torch

CHROMIUM = "/usr/bin/chromium"


@pytest.fixture(scope="session")
def chromium():
    """A headless system chromium via Playwright's sync API; skipped when it is not installed."""
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"{CHROMIUM} not found: install it with `apt-get install -y chromium`")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        yield browser
        browser.close()


@pytest.fixture
def one_thread():
    """One intra-op thread: on a shared 2-core machine, 2 threads per process thrash (10x slower).
    Training tests use it with `pytestmark = pytest.mark.usefixtures("one_thread")`."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    """A tiny COCO dataset of bright ellipses on dark noise (tests/test_train_loop.py)."""
    from tests.test_train_loop import make_shapes_dataset

    return make_shapes_dataset(tmp_path_factory.mktemp("shapes") / "data")
