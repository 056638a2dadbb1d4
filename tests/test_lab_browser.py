"""JupyterLab serves notebook 10 and the prompt explorer renders its widgets in a real (headless) browser.

Needs `make lab`'s extras (jupyterlab, jupyterlab_widgets), selenium and Debian's chromium + chromium-driver;
skipped when any is missing (CI's clean clone has no browser). The notebook runs on a copy in a temporary
folder, so JupyterLab's autosave never touches the tracked source.
"""

from __future__ import annotations

import importlib.util
import shutil
import socket
import subprocess
import time

import pytest

from tests.conftest import REPO

CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
JUPYTER = shutil.which("jupyter", path=str(REPO / ".venv" / "bin")) or shutil.which("jupyter")
pytestmark = pytest.mark.skipif(
    not (CHROMIUM and DRIVER and JUPYTER and importlib.util.find_spec("selenium")
         and importlib.util.find_spec("jupyterlab") and importlib.util.find_spec("jupyterlab_widgets")),
    reason="needs chromium, chromium-driver, selenium and jupyterlab + jupyterlab_widgets (make lab)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def lab(tmp_path):
    (tmp_path / "notebooks").mkdir()
    shutil.copy(REPO / "notebooks" / "10_interactive_prompts.ipynb", tmp_path / "notebooks")
    port, token = _free_port(), "clipseg-lab-test"
    server = subprocess.Popen(
        [JUPYTER, "lab", "--no-browser", f"--port={port}", f"--IdentityProvider.token={token}",
         f"--ServerApp.root_dir={tmp_path}", "--LabApp.expose_app_in_browser=True", "--ServerApp.ip=127.0.0.1",
         "--allow-root"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**__import__("os").environ,
                                                                   "PYTHONPATH": str(REPO)})
    try:
        deadline = time.time() + 60
        while time.time() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.5)
        else:
            pytest.fail("JupyterLab did not start within 60 s")
        yield f"http://127.0.0.1:{port}/lab/tree/notebooks/10_interactive_prompts.ipynb?token={token}"
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_jupyterlab_renders_the_prompt_explorer(lab):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1000"):
        options.add_argument(flag)
    browser = webdriver.Chrome(service=Service(DRIVER), options=options)
    try:
        browser.get(lab)
        wait = WebDriverWait(browser, 120, poll_frequency=0.5)
        idle = ("const p = window.jupyterapp && window.jupyterapp.shell.currentWidget;"
                "return !!(p && p.sessionContext && p.sessionContext.session && p.sessionContext.session.kernel"
                " && p.sessionContext.session.kernel.status === 'idle');")
        wait.until(lambda b: b.execute_script(idle))
        browser.execute_script("window.jupyterapp.commands.execute('notebook:run-all-cells');")
        image = wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, ".widget-image"))
        wait.until(lambda b: b.execute_script(idle) and b.find_elements(By.CSS_SELECTOR, ".widget-upload"))
        assert len(browser.find_elements(By.CSS_SELECTOR, ".widget-dropdown select")) == 2  # image, model
        assert len(browser.find_elements(By.CSS_SELECTOR, ".widget-slider")) == 2  # threshold, overlay
        src = image[0].get_attribute("src")
        assert src and src.startswith("blob:"), "the explorer's frame is not shown"
        prompt = browser.find_element(By.CSS_SELECTOR, ".widget-text input[placeholder*='prompts']")
        prompt.clear()
        prompt.send_keys("a wooden door", Keys.ENTER)  # continuous_update=False: applied on Enter
        wait.until(lambda b: b.find_element(By.CSS_SELECTOR, ".widget-image").get_attribute("src") != src)
        errors = [e.text for e in browser.find_elements(By.CSS_SELECTOR,
                                                        ".jp-OutputArea-output[data-mime-type*='error']")]
        assert not errors, errors
    finally:
        browser.quit()
