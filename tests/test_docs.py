"""README.md and docs/ say what is true: every shell and Python example runs as written
against a gateway as the Procfile starts it (with fake providers on 127.0.0.1 behind it),
every relative link resolves, and every variable the code reads is in both configuration
tables. An example that cannot run says why on its first line (`# not run: ...`)."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

from fake_echo import EchoProvider
from gateway_process import clean_env, run_gateway

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"(?ms)^```(\w*)\n(.*?)^```")
WHERE = "http://127.0.0.1:8080"  # where the examples say the gateway is
KEY = "change-me"  # the key they use


def examples():
    """(page, number, language, code) of every shell and Python block."""
    found = []
    for page in PAGES:
        for i, (language, code) in enumerate(FENCE.findall(page.read_text())):
            if language in ("sh", "bash", "python"):
                found.append(pytest.param(language, code, id=f"{page.name}-{i}"))
    return found


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    with EchoProvider() as echo, run_gateway(
            tmp_path_factory.mktemp("docs"), GATEWAY_API_KEYS=KEY,
            OPENAI_API_KEY="sk-docs", OPENAI_BASE_URL=echo.base_url,
            ANTHROPIC_API_KEY="sk-ant-docs", ANTHROPIC_BASE_URL=echo.base_url,
            GROQ_API_KEY="gsk-docs", GROQ_BASE_URL=echo.base_url) as gw:
        yield gw


@pytest.mark.parametrize("language, code", examples())
def test_every_example_runs_as_written(gateway, tmp_path, language, code):
    if code.lstrip().startswith("# not run"):
        reason = code.lstrip().splitlines()[0]
        assert len(reason) > len("# not run: ") + 10, "say why it cannot run"
        return
    code = code.replace(WHERE, gateway.url)
    command = [sys.executable, "-c", code] if language == "python" else \
        ["bash", "-euo", "pipefail", "-c", code]
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=60,
                          env=clean_env())
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}"


def slug(heading):
    """A heading's anchor, as GitHub makes it."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(page):
    return {slug(h) for h in re.findall(r"(?m)^#+ (.*)$", FENCE.sub("", page.read_text()))}


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_relative_link_resolves(page):
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", FENCE.sub("", page.read_text())):
        if re.match(r"[a-z]+:", target):
            continue  # http:, https:, mailto:
        path, _, fragment = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            broken.append(target)
        elif fragment and dest.suffix == ".md" and fragment not in anchors(dest):
            broken.append(target)
    assert broken == []


def test_the_readme_is_read_in_five_minutes():
    assert len((ROOT / "README.md").read_text().splitlines()) <= 250


def read_variables():
    """The environment variables the code reads (config.py and gunicorn.conf.py)."""
    code = (ROOT / "config.py").read_text() + (ROOT / "gunicorn.conf.py").read_text()
    return set(re.findall(r'"([A-Z][A-Z0-9_]{2,})"', code)) & set(
        re.findall(r'(?:env(?:iron)?(?:\.get)?\(?\[?|_positive_number\(env, |_setting\(env, )'
                   r'"([A-Z][A-Z0-9_]+)"', code))


@pytest.mark.parametrize("page", ["README.md", "docs/configuration.md"])
def test_every_variable_the_code_reads_is_in_the_configuration_table(page):
    table = (ROOT / page).read_text()

    missing = {name for name in read_variables() if f"`{name}`" not in table}

    assert read_variables() >= {"GATEWAY_API_KEYS", "STORE_URL", "WEBHOOK_URL"}
    assert missing == set()
