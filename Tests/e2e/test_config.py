"""Configuration: file, environment and flags; precedence; start-up errors; check-config."""

from __future__ import annotations

import pytest
import requests

from backend import Backend
from harness import REPO_ROOT, run_tracegate

GOOD_UPSTREAM = "http://127.0.0.1:8000"


def error_line(p) -> str:
    """A config error is exit code 2 and exactly one line on stderr."""
    assert p.returncode == 2, f"exit {p.returncode}\nstdout: {p.stdout}\nstderr: {p.stderr}"
    lines = [line for line in p.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}:\n{p.stderr}"
    return lines[0]


def write_conf(tmp_path, text: str):
    path = tmp_path / "proxy.conf"
    path.write_text(text)
    return path


@pytest.mark.parametrize("command", [["check-config"], ["run"], []], ids=["check-config", "run", "no-subcommand"])
def test_unknown_key_in_file_names_file_line_and_key(tmp_path, command):
    conf = write_conf(tmp_path, f"upstream = {GOOD_UPSTREAM}\n# a comment\nbogus_key = 1\n")
    line = error_line(run_tracegate([*command, "--config", str(conf), "--listen", "127.0.0.1:0",
                                     "--admin-listen", "127.0.0.1:0"]))
    assert f"{conf}:3" in line, line
    assert "bogus_key" in line, line


def test_bad_value_in_file_names_file_line_and_key(tmp_path):
    conf = write_conf(tmp_path, f"# tracegate\n\nupstream = {GOOD_UPSTREAM}\nconnect_timeout = soon\n")
    line = error_line(run_tracegate(["check-config", "--config", str(conf)]))
    assert f"{conf}:4" in line, line
    assert "connect_timeout" in line, line


def test_bad_environment_value_names_the_variable():
    line = error_line(run_tracegate(["check-config"], env={"TRACEGATE_UPSTREAM": GOOD_UPSTREAM,
                                                           "TRACEGATE_CONNECT_TIMEOUT": "banana"}))
    assert "environment variable TRACEGATE_CONNECT_TIMEOUT" in line, line


def test_bad_flag_value_names_the_flag():
    line = error_line(run_tracegate(["check-config", "--upstream", GOOD_UPSTREAM, "--max-body-bytes", "lots"]))
    assert "flag --max-body-bytes" in line, line


def test_unknown_flag_is_a_config_error():
    line = error_line(run_tracegate(["check-config", "--upstream", GOOD_UPSTREAM, "--no-such-setting", "1"]))
    assert "no-such-setting" in line, line


@pytest.mark.parametrize("command", [["check-config"], ["run"]])
def test_missing_upstream_is_a_config_error(command):
    line = error_line(run_tracegate([*command, "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"]))
    assert "upstream" in line, line


def test_check_config_accepts_the_example_file_with_an_upstream(tmp_path):
    text = (REPO_ROOT / "proxy.conf.example").read_text()
    assert "# upstream = " in text
    conf = write_conf(tmp_path, text.replace("# upstream = ", "upstream = ", 1))
    p = run_tracegate(["check-config", "--config", str(conf)])
    assert p.returncode == 0, p.stderr


def test_check_config_rejects_the_example_file_as_shipped(tmp_path):
    """The example leaves upstream commented out, and upstream is required."""
    p = run_tracegate(["check-config", "--config", str(REPO_ROOT / "proxy.conf.example")])
    assert "upstream" in error_line(p)


def test_config_file_syntax_quotes_comments_and_units(tmp_path):
    conf = write_conf(tmp_path, "\n".join([
        "# comment line",
        "   # indented comment",
        "",
        f'upstream = "{GOOD_UPSTREAM}/base"',
        "listen=127.0.0.1:18080",
        'admin_listen = "127.0.0.1:19090"',
        "connect_timeout = 250ms",
        "first_byte_timeout = 2m",
        "idle_timeout = 1h",
        "client_keepalive_timeout = 30",
        "shutdown_grace = 5s",
        "max_header_bytes = 64KiB",
        "max_body_bytes = 10MB",
        "preserve_host = yes",
        "upstream_tls_verify = off",
        "upstream_pool_size = 8",
        "threads = 2",
        "access_log = json",
        "log_level = debug",
        "forwarded_headers = both",
        'request_id_header = "X-Correlation-ID"',
        "",
    ]))
    p = run_tracegate(["check-config", "--config", str(conf)])
    assert p.returncode == 0, p.stderr


@pytest.mark.parametrize("key,value", [
    ("connect_timeout", "250ms"), ("connect_timeout", "5s"), ("connect_timeout", "2m"), ("connect_timeout", "1h"),
    ("connect_timeout", "7"), ("max_body_bytes", "512"), ("max_body_bytes", "64KiB"), ("max_body_bytes", "10MiB"),
    ("max_body_bytes", "1GiB"), ("max_body_bytes", "10K"), ("max_body_bytes", "10MB"), ("max_body_bytes", "0"),
    ("max_header_bytes", "80KiB"), ("preserve_host", "true"), ("preserve_host", "no"), ("preserve_host", "on"),
    ("preserve_host", "0"), ("listen", "[::1]:8080"), ("upstream", "https://example.test:8443/base"),
    ("access_log", "off"), ("log_level", "trace"), ("forwarded_headers", "none"), ("threads", "0"),
])
def test_check_config_accepts_valid_values(key, value):
    args = ["check-config"] + (["--upstream", GOOD_UPSTREAM] if key != "upstream" else []) + \
        [f"--{key.replace('_', '-')}", value]
    p = run_tracegate(args)
    assert p.returncode == 0, f"{args}: {p.stderr}"


@pytest.mark.parametrize("key,value", [
    ("listen", "nohost"), ("listen", "127.0.0.1:99999"), ("upstream", "ftp://127.0.0.1:21"),
    ("upstream", "not a url"), ("connect_timeout", "5x"), ("connect_timeout", "-1s"),
    ("max_body_bytes", "10QB"), ("max_header_bytes", "100KiB"), ("preserve_host", "maybe"),
    ("access_log", "xml"), ("log_level", "loud"), ("forwarded_headers", "all"), ("threads", "many"),
    ("upstream_pool_size", "-3"),
])
def test_check_config_rejects_invalid_values_naming_the_flag(key, value):
    flag = f"--{key.replace('_', '-')}"
    args = ["check-config"] + (["--upstream", GOOD_UPSTREAM] if key != "upstream" else []) + [flag, value]
    line = error_line(run_tracegate(args))
    assert f"flag {flag}" in line, line


def test_flag_equals_form_is_accepted():
    assert run_tracegate(["check-config", f"--upstream={GOOD_UPSTREAM}", "--connect-timeout=2s"]).returncode == 0
    line = error_line(run_tracegate(["check-config", f"--upstream={GOOD_UPSTREAM}", "--connect-timeout=never"]))
    assert "flag --connect-timeout" in line, line


@pytest.fixture
def three_backends():
    backends = [Backend(name=n).start() for n in ("from-file", "from-env", "from-flag")]
    yield backends
    for b in backends:
        b.stop()


def answering_backend(tg) -> str:
    return requests.get(f"{tg.url}/echo", timeout=5).headers["X-Backend"]


def test_precedence_flag_over_environment_over_file(tmp_path, three_backends, start_tracegate):
    file_b, env_b, flag_b = three_backends
    conf = write_conf(tmp_path, f"upstream = {file_b.url}\n")
    tg = start_tracegate(None, "--config", str(conf))
    assert answering_backend(tg) == "from-file"
    tg = start_tracegate(None, "--config", str(conf), env={"TRACEGATE_UPSTREAM": env_b.url})
    assert answering_backend(tg) == "from-env"
    tg = start_tracegate(flag_b.url, "--config", str(conf), env={"TRACEGATE_UPSTREAM": env_b.url})
    assert answering_backend(tg) == "from-flag"


def test_config_path_from_environment(tmp_path, backend, start_tracegate):
    conf = write_conf(tmp_path, f"upstream = {backend.url}\n")
    tg = start_tracegate(None, env={"TRACEGATE_CONFIG": str(conf)})
    assert answering_backend(tg) == backend.name


def test_explicit_run_subcommand_starts_the_proxy(backend, start_tracegate):
    tg = start_tracegate(backend.url, subcommand="run")
    assert tg.args[0] == "run"
    assert answering_backend(tg) == backend.name


def test_flag_equals_form_starts_the_proxy(backend, start_tracegate):
    tg = start_tracegate(None, f"--upstream={backend.url}")
    assert answering_backend(tg) == backend.name
