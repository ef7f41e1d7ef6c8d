"""HTTPS on the FHIR/admin port: `ehrsim serve --tls-*` as a real process, `serve_in_thread(tls=...)`,
and the shared TLS helpers (simulator/tls.py). Every request goes over a real socket."""

from __future__ import annotations

import datetime
import ipaddress
import json
import ssl
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from cryptography import x509

from simulator.admin_client import AdminClient
from simulator.mllp.tls import server_context as mllp_server_context
from simulator.testing import free_ports, serve_in_thread
from simulator.tls import TLSError, self_signed_pair, server_context
from tests.process_support import ROOT, run_python, serve

TIMEOUT = 30.0  # the machine is shared; slowness is not what these tests check


def ehrsim(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return run_python("-m", "simulator", *args, timeout=60, env=env)


@dataclass
class Served:
    proc: subprocess.Popen[str]
    banner: list[str]
    origin: str
    cert: Path

    def client(self) -> httpx.Client:
        return httpx.Client(verify=ssl.create_default_context(cafile=str(self.cert)), timeout=TIMEOUT)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """`ehrsim serve --tls-self-signed DIR` with SMART on (token-expiry), on free ports."""
    certs = tmp_path_factory.mktemp("certs")
    port, mllp_port = free_ports(2)
    proc, banner = serve(
        *("--scenario", "token-expiry", "--port", str(port), "--mllp-port", str(mllp_port)),
        *("--tls-self-signed", str(certs)),
    )
    try:
        assert proc.poll() is None, banner
        yield Served(proc, banner, f"https://127.0.0.1:{port}", certs / "ehrsim-cert.pem")
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_banner_prints_https_urls_and_the_certificate(served: Served) -> None:
    assert "ready in" in served.banner[0], served.banner
    urls = [word for line in served.banner for word in line.split() if "://" in word]
    assert urls == [
        f"{served.origin}/fhir",
        f"{served.origin}/fhir/.well-known/smart-configuration",
        f"{served.origin}/_admin/health",
    ], served.banner
    assert any(str(served.cert) in line for line in served.banner), served.banner
    assert served.cert.is_file() and (served.cert.parent / "ehrsim-key.pem").is_file()


def test_verified_https_request_gets_the_capability_statement(served: Served) -> None:
    with served.client() as http:
        response = http.get(f"{served.origin}/fhir/metadata")
    assert response.status_code == 200
    statement = response.json()
    assert statement["resourceType"] == "CapabilityStatement"
    assert statement["implementation"]["url"] == f"{served.origin}/fhir"
    oauth = statement["rest"][0]["security"]["extension"][0]["extension"]
    assert {e["url"]: e["valueUri"] for e in oauth}["token"] == f"{served.origin}/fhir/auth/token"


def test_a_client_without_the_certificate_refuses_the_server(served: Served) -> None:
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.get(f"{served.origin}/_admin/health", timeout=TIMEOUT)


def test_plain_http_to_the_tls_port_fails_cleanly_and_the_server_carries_on(served: Served) -> None:
    plain = served.origin.replace("https://", "http://")
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        httpx.get(f"{plain}/_admin/health", timeout=TIMEOUT)
    assert served.proc.poll() is None
    with served.client() as http:
        assert http.get(f"{served.origin}/_admin/health").json()["status"] == "ok"


def test_admin_sites_and_smart_discovery_give_https_urls(served: Served) -> None:
    with served.client() as http:
        site = http.get(f"{served.origin}/_admin/sites").json()[0]
        discovery = http.get(f"{served.origin}/fhir/.well-known/smart-configuration").json()
    assert site["fhir_base"] == f"{served.origin}/fhir"
    assert site["smart"]["token"] == f"{served.origin}/fhir/auth/token"
    assert discovery["issuer"] == f"{served.origin}/fhir"
    for key in ("token_endpoint", "authorization_endpoint", "jwks_uri"):
        assert discovery[key].startswith(f"{served.origin}/fhir/auth/"), (key, discovery[key])


def test_admin_client_over_https_trusts_the_certificate_it_is_given(served: Served) -> None:
    context = ssl.create_default_context(cafile=str(served.cert))
    with AdminClient(served.origin, verify=context, timeout=TIMEOUT) as admin:
        assert admin.health()["scenario"] == "token-expiry"


def test_env_prints_https_addresses(served: Served) -> None:
    by_flag = ehrsim("env", "--server", served.origin, "--cacert", str(served.cert), "--json")
    assert by_flag.returncode == 0, by_flag.stderr
    values = json.loads(by_flag.stdout)
    assert values["EHRSIM_FHIR_BASE"] == f"{served.origin}/fhir"
    assert values["EHRSIM_TOKEN_URL"] == f"{served.origin}/fhir/auth/token"
    by_env = ehrsim("env", "--server", served.origin, env={"SSL_CERT_FILE": str(served.cert)})
    assert by_env.returncode == 0, by_env.stderr
    assert f"export EHRSIM_FHIR_BASE={served.origin}/fhir\n" in by_env.stdout


def test_env_without_trust_says_how_to_give_it(served: Served) -> None:
    result = ehrsim("env", "--server", served.origin)
    assert result.returncode == 1
    assert "CERTIFICATE_VERIFY_FAILED" in result.stderr and "--cacert" in result.stderr
    assert result.stdout == ""


def test_env_with_a_bad_cacert_says_which_file(served: Served, pairs: dict[str, Path]) -> None:
    for cacert, reason in ((pairs["missing"], "No such file"), (pairs["junk"], "")):
        result = ehrsim("env", "--server", served.origin, "--cacert", str(cacert))
        assert result.returncode == 1
        assert result.stderr.startswith(f"ehrsim env: --cacert {cacert}: {reason}"), result.stderr
        assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr, result.stderr


@pytest.fixture(scope="module")
def pairs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("pairs")
    cert, key = self_signed_pair(root / "a")
    _, other_key = self_signed_pair(root / "b")
    junk = root / "junk.pem"
    junk.write_text("not a PEM file\n")
    return {"cert": cert, "key": key, "other_key": other_key, "junk": junk, "missing": root / "nope.pem"}


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (("--tls-cert", "missing", "--tls-key", "key"), "certificate file {missing} does not exist"),
        (("--tls-cert", "cert", "--tls-key", "missing"), "key file {missing} does not exist"),
        (("--tls-cert", "junk", "--tls-key", "key"), "certificate file {junk} holds no PEM certificate"),
        (("--tls-cert", "cert", "--tls-key", "junk"), "key file {junk} holds no PEM private key"),
        (("--tls-cert", "cert", "--tls-key", "other_key"), "key file {other_key} does not belong to"),
        (("--tls-cert", "cert"), "--tls-cert and --tls-key go together"),
        (("--tls-self-signed", "DIR", "--tls-cert", "cert", "--tls-key", "key"), "not both"),
        (("--tls-self-signed", "under_a_file"), "--tls-self-signed {under_a_file}: cannot write there"),
    ],
)
def test_bad_tls_options_exit_2_with_one_line(
    pairs: dict[str, Path], tmp_path: Path, flags: tuple[str, ...], message: str
) -> None:
    paths = {name: str(path) for name, path in pairs.items()}
    paths |= {"DIR": str(tmp_path), "under_a_file": str(pairs["junk"] / "certs")}
    port, mllp_port = free_ports(2)
    argv = [paths.get(flag, flag) for flag in flags]
    result = ehrsim("serve", "--port", str(port), "--mllp-port", str(mllp_port), *argv)
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr, result.stderr
    assert message.format(**paths) in result.stderr
    assert result.stdout == ""


def test_serve_in_thread_over_https(pairs: dict[str, Path]) -> None:
    with serve_in_thread("default", tls=(pairs["cert"], pairs["key"])) as server:
        assert server.origin.startswith("https://")
        with httpx.Client(verify=server.ssl_context(), timeout=TIMEOUT) as http:
            bundle = http.get(server.fhir_base + "/Patient", params={"_count": 1}).json()
        assert bundle["total"] > 0
        assert bundle["link"][0]["url"].startswith(server.fhir_base + "/Patient")
        assert bundle["entry"][0]["fullUrl"].startswith("https://")


def test_serve_in_thread_refuses_a_bad_pair_before_starting(pairs: dict[str, Path]) -> None:
    bad = (pairs["cert"], pairs["other_key"])
    with pytest.raises(TLSError, match="does not belong"), serve_in_thread("default", tls=bad):
        pass


def test_serve_in_thread_stays_plain_http_by_default() -> None:
    with serve_in_thread("default") as server:
        assert server.origin.startswith("http://")
        assert httpx.get(server.admin + "/health", timeout=TIMEOUT).json()["status"] == "ok"
        with pytest.raises(ValueError, match="plain HTTP"):
            server.ssl_context()


def test_self_signed_pair_names_localhost_and_loopback(pairs: dict[str, Path]) -> None:
    certificate = x509.load_pem_x509_certificate(pairs["cert"].read_bytes())
    san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    left = certificate.not_valid_after_utc - datetime.datetime.now(datetime.UTC)
    assert datetime.timedelta(days=29) < left <= datetime.timedelta(days=30)
    assert oct(pairs["key"].stat().st_mode & 0o777) == "0o600"


def test_self_signed_pair_is_reused_only_while_it_is_sound(tmp_path: Path) -> None:
    cert, key = self_signed_pair(tmp_path)
    first = cert.read_bytes()
    assert self_signed_pair(tmp_path, reuse=True) == (cert, key)
    assert cert.read_bytes() == first  # clients that trust it keep working after a restart
    key.write_text("damaged\n")
    self_signed_pair(tmp_path, reuse=True)
    assert cert.read_bytes() != first
    server_context(cert, key)  # the new pair belongs together
    again = cert.read_bytes()
    self_signed_pair(tmp_path)  # without reuse: always a new pair
    assert cert.read_bytes() != again


def test_python_m_simulator_tls_writes_a_pair(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "simulator.tls", str(tmp_path / "out")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    cert, key = (Path(line) for line in result.stdout.splitlines())
    assert (cert, key) == (tmp_path / "out" / "ehrsim-cert.pem", tmp_path / "out" / "ehrsim-key.pem")
    server_context(cert, key)


def test_mllp_tls_settings_use_the_shared_checks(pairs: dict[str, Path]) -> None:
    assert isinstance(mllp_server_context({"cert": pairs["cert"], "key": pairs["key"]}), ssl.SSLContext)
    with pytest.raises(ValueError, match="needs 'cert' and 'key'"):
        mllp_server_context({"cert": pairs["cert"]})
    with pytest.raises(TLSError, match="holds no PEM certificate"):
        mllp_server_context({"cert": pairs["junk"], "key": pairs["key"]})


def test_scenario_validation_names_a_broken_mllp_tls_file(pairs: dict[str, Path], tmp_path: Path) -> None:
    from simulator.scenario import validate_file

    path = tmp_path / "tls.yaml"
    path.write_text(
        "name: tls-check\nsites:\n  - id: a\n    mllp:\n"
        f"      tls: {{cert: {pairs['junk']}, key: {pairs['key']}}}\n"
    )
    problems = validate_file(str(path))
    assert [p.message for p in problems] == [f"certificate file {pairs['junk']} holds no PEM certificate"]
