"""The `ehrsim` command line."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from simulator import __version__, gcpolicy


def _serve_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="serve a scenario (FHIR R4 API, admin API, MLLP)")
    p.add_argument("--scenario", default="default", help="scenario name (see scenarios/) or YAML path")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (0.0.0.0 for all interfaces)")
    p.add_argument("--port", type=int, default=8080, help="HTTP port for FHIR and admin (default 8080)")
    p.add_argument("--mllp-port", type=int, default=2575, help="MLLP port of the first site (default 2575)")
    p.add_argument("--seed", help="override the scenario's seed")
    p.add_argument("--store", default="memory", help="memory (default) or sqlite:PATH")
    p.add_argument("--log-level", default="warning", choices=["debug", "info", "warning", "error"])
    p.add_argument(
        "--log-format", default="text", choices=["text", "json"], help="json: one JSON object a line"
    )
    p.add_argument("--no-journal", action="store_true", help="record nothing (overrides the scenario)")
    p.add_argument(
        "--no-auth", action="store_true", help="serve every site without SMART auth (overrides the scenario)"
    )
    p.add_argument("--admin-token", help="token the admin API requires (default: generated off loopback)")
    tls = p.add_argument_group("HTTPS", "serve FHIR, SMART and admin over TLS on --port (README: HTTPS)")
    tls.add_argument("--tls-cert", metavar="PATH", help="PEM certificate (chain); needs --tls-key")
    tls.add_argument("--tls-key", metavar="PATH", help="PEM private key of --tls-cert (unencrypted)")
    tls.add_argument(
        "--tls-self-signed",
        metavar="DIR",
        help="serve with a self-signed pair for localhost in DIR (kept while valid, else written anew)",
    )


def _tls_files(args: argparse.Namespace) -> tuple[str, str] | None:
    """The (cert, key) to serve HTTPS with, checked to load; None for plain HTTP. Raises ValueError."""
    from simulator.tls import self_signed_pair, server_context

    if args.tls_self_signed and (args.tls_cert or args.tls_key):
        raise ValueError("give either --tls-self-signed or --tls-cert/--tls-key, not both")
    if args.tls_self_signed:
        try:
            cert, key = self_signed_pair(args.tls_self_signed, reuse=True)
        except OSError as exc:
            where = args.tls_self_signed
            raise ValueError(
                f"--tls-self-signed {where}: cannot write there ({exc.strerror or exc})"
            ) from None
    elif args.tls_cert or args.tls_key:
        if not (args.tls_cert and args.tls_key):
            raise ValueError("--tls-cert and --tls-key go together")
        cert, key = args.tls_cert, args.tls_key
    else:
        return None
    # Checked here so that a bad file is one line and exit 2, not uvicorn's traceback at start-up.
    server_context(cert, key)
    return str(cert), str(key)


def _scenario_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("scenario", help="validate, list or show scenario files")
    actions = p.add_subparsers(dest="scenario_command", required=True)
    validate = actions.add_parser("validate", help="check scenario files against the schema")
    validate.add_argument("files", nargs="+", metavar="FILE", help="scenario names or YAML paths")
    actions.add_parser("list", help="the shipped scenarios with one-line descriptions")
    show = actions.add_parser("show", help="print the resolved scenario (extends and defaults merged)")
    show.add_argument("name", help="scenario name or YAML path")
    show.add_argument("--format", default="yaml", choices=["yaml", "json"])


def _generate_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "generate",
        help="export a scenario's synthetic population as FHIR files",
        description="Write each site's population to OUT/<site id>/: transaction bundles per patient "
        "(PUT Type/id, loadable into other servers) or NDJSON per resource type (Bulk Data format).",
    )
    p.add_argument("--scenario", default="default", help="scenario name (see scenarios/) or YAML path")
    p.add_argument("--out", required=True, help="directory to write (created if missing)")
    p.add_argument("--format", choices=["bundle", "ndjson"], default="bundle", help="default: bundle")
    p.add_argument("--seed", help="override the scenario's seed")
    p.add_argument("--patients", type=int, help="override every site's number of patients")
    p.add_argument("--site", action="append", help="only this site id (repeatable); default: all sites")


def _conformance_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("conformance", help="run the conformance suite against a FHIR server")
    kinds = p.add_subparsers(dest="suite", required=True)
    server = kinds.add_parser("server", help="checks any FHIR R4 server must pass")
    server.add_argument("--fhir-base", required=True, help="the server's FHIR base URL")
    server.add_argument("--token", help="a bearer token to send (e.g. from `ehrsim token`)")
    server.add_argument("--group", action="append", help="only these check groups (repeatable)")
    server.add_argument("--junit", help="also write the results as JUnit XML to this file")
    smart = kinds.add_parser("smart", help="SMART App Launch server checks (Inferno's; docs/auth.md)")
    smart.add_argument("--fhir-base", required=True, help="the server's FHIR base URL")
    smart.add_argument("--client-id", required=True, help="a public client registered for the code flow")
    smart.add_argument("--redirect-uri", default="http://127.0.0.1:9999/callback", help="its redirect URI")
    smart.add_argument("--confidential", metavar="ID:SECRET", help="a confidential client, for introspection")
    smart.add_argument("--junit", help="also write the results as JUnit XML to this file")
    client = kinds.add_parser(
        "client",
        help="run an integration against a scenario and judge its behaviour from the journal",
        description="Serve the scenario, run COMMAND with the EHRSIM_* variables, wait --settle "
        "seconds, then judge the journal (docs/conformance.md). Exit status 1 if a check failed or "
        "COMMAND failed or timed out.",
        usage="%(prog)s (--scenario NAME|PATH | --server URL) [options] [-- COMMAND [ARGS...]]",
    )
    where = client.add_mutually_exclusive_group(required=True)
    where.add_argument("--scenario", help="scenario name (see scenarios/) or YAML path to serve")
    where.add_argument("--server", help="judge a sandbox already running at this origin (http://host:port)")
    client.add_argument("--seed", help="override the scenario's seed")
    client.add_argument("--junit", help="also write the results as JUnit XML to this file")
    client.add_argument("--timeout", type=float, default=300.0, help="seconds COMMAND may run (default 300)")
    client.add_argument(
        "--settle", type=float, default=0.5, help="seconds to wait after COMMAND (default 0.5)"
    )
    client.add_argument("--site", help="site whose addresses COMMAND gets (default: the first)")
    client.add_argument("--client", help="client id COMMAND gets (default: the site's first backend client)")
    client.add_argument("--private-key", help="PEM path passed on as EHRSIM_PRIVATE_KEY")
    client.add_argument("--admin-token", help="admin API token for --server (or $EHRSIM_ADMIN_TOKEN)")
    client.add_argument("--min-gap", type=float, default=0.5, help="seconds between retries during errors")
    client.add_argument("--backoff", type=float, help="each retry gap at least this times the previous")
    client.add_argument(
        "--dead-token-retries", type=int, default=1, help="requests allowed with a refused token (default 1)"
    )
    client.add_argument(
        "--resend-min-gap", type=float, default=0.5, help="seconds between MLLP resends (default 0.5)"
    )


def client_command(args: argparse.Namespace) -> int:
    import httpx

    from conformance.client_checks import Thresholds
    from conformance.client_run import Integration, judge, sandbox
    from conformance.report import exit_code, junit_xml, text
    from simulator.admin_client import AdminError
    from simulator.integration_env import IntegrationEnvError
    from simulator.scenario import ScenarioError

    command = args.integration
    if args.scenario and not command:
        print("ehrsim conformance client: give the integration to run after --", file=sys.stderr)
        return 2
    if args.timeout <= 0 or args.settle < 0:
        print("ehrsim conformance client: --timeout must be above 0 and --settle 0 or more", file=sys.stderr)
        return 2
    thresholds = Thresholds(args.min_gap, args.backoff, args.dead_token_retries, args.resend_min_gap)
    integration = Integration(command, args.timeout, args.settle, args.site, args.client, args.private_key)
    try:
        if args.server:
            results = judge(args.server, integration, thresholds, _admin_token(args))
        else:
            with sandbox(args.scenario, args.seed) as origin:
                print(
                    f"ehrsim: scenario '{args.scenario}' at {origin}; running {' '.join(command)}", flush=True
                )
                results = judge(origin, integration, thresholds)
    except (ScenarioError, ValueError, OSError, AdminError, IntegrationEnvError) as exc:
        print(f"ehrsim conformance client: {exc}", file=sys.stderr)
        return 2
    except httpx.HTTPError as exc:
        print(f"ehrsim conformance client: cannot reach {args.server}: {exc}", file=sys.stderr)
        return 2
    print(text(results))
    if args.junit:
        with open(args.junit, "wb") as out:
            out.write(junit_xml(results, "ehrsim-conformance-client"))
    return exit_code(results)


def conformance_command(args: argparse.Namespace) -> int:
    from conformance.report import exit_code, junit_xml, text
    from conformance.runner import run_server_checks
    from conformance.smart_checks import run_smart_checks

    if args.suite == "client":
        return client_command(args)
    if args.suite == "smart":
        secret = tuple(args.confidential.split(":", 1)) if args.confidential else None
        results = run_smart_checks(
            args.fhir_base, client_id=args.client_id, redirect_uri=args.redirect_uri, secret_auth=secret
        )
    else:
        results = run_server_checks(args.fhir_base, args.token, args.group)
    print(text(results))
    if args.junit:
        with open(args.junit, "wb") as out:
            out.write(junit_xml(results))
    return exit_code(results)


def _token_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "token",
        help="mint an access token for a registered client (admin API); prints the bare token last",
    )
    _admin_options(p)
    p.add_argument("--site", help="site id (default: the first site with auth on)")
    p.add_argument("--client", help="client id (default: the site's first registered client)")
    p.add_argument("--scope", nargs="+", help="scopes (default: all the client's registered scopes)")
    p.add_argument("--patient", help="patient context (default: the first patient, for patient/ scopes)")


def _admin_options(p: argparse.ArgumentParser) -> None:
    """--server and --admin-token, for commands that talk to a running sandbox's admin API."""
    p.add_argument("--server", default="http://127.0.0.1:8080", help="ehrsim origin (default %(default)s)")
    p.add_argument(
        "--admin-token",
        help="admin API token (or $EHRSIM_ADMIN_TOKEN), needed when ehrsim listens beyond loopback",
    )
    p.add_argument(
        "--cacert", metavar="PEM", help="trust this certificate for an https:// --server (or $SSL_CERT_FILE)"
    )


def _admin_token(args: argparse.Namespace) -> str | None:
    import os

    return args.admin_token or os.environ.get("EHRSIM_ADMIN_TOKEN")


def _with_admin(args: argparse.Namespace, command: str, call: Callable[[Any], Any]) -> Any:
    """`call(admin)` against --server; on failure print why, naming the command, and return None."""
    import ssl

    import httpx

    from simulator.admin_client import AdminClient, AdminError
    from simulator.integration_env import IntegrationEnvError

    try:
        verify = ssl.create_default_context(cafile=args.cacert) if args.cacert else True
    except OSError as exc:  # missing or not PEM (ssl.SSLError is an OSError)
        print(f"ehrsim {command}: --cacert {args.cacert}: {_one_line(exc)}", file=sys.stderr)
        return None
    try:
        with AdminClient(args.server, _admin_token(args), verify=verify) as admin:
            return call(admin)
    except (AdminError, IntegrationEnvError) as exc:
        print(f"ehrsim {command}: {exc}", file=sys.stderr)
    except httpx.HTTPError as exc:
        hint = " (trust its certificate with --cacert PEM)" if "CERTIFICATE_VERIFY_FAILED" in str(exc) else ""
        print(f"ehrsim {command}: cannot reach {args.server}: {exc}{hint}", file=sys.stderr)
    return None


def token(args: argparse.Namespace) -> int:
    data = _with_admin(
        args,
        "token",
        lambda admin: admin.token(
            site=args.site,
            client_id=args.client,
            scope=" ".join(args.scope) if args.scope else None,
            patient=args.patient,
        ),
    )
    if data is None:
        return 1
    context = f", patient {data['patient']}" if data.get("patient") else ""
    print(f"client {data['client_id']}, scope {data['scope']}, expires in {data['expires_in']} s{context}")
    print(data["access_token"])
    return 0


def _env_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "env",
        help="print the sandbox's addresses as EHRSIM_* variables for an integration under test",
        description='eval "$(ehrsim env)" before starting the integration (variables: docs/conformance.md)',
    )
    _admin_options(p)
    p.add_argument("--site", help="site id (default: the first site)")
    p.add_argument("--client", help="client id (default: the site's first backend client, else its first)")
    p.add_argument("--private-key", help="PEM path of the integration's key, passed on as EHRSIM_PRIVATE_KEY")
    p.add_argument("--json", action="store_true", help="print a JSON object instead of export lines")


def env(args: argparse.Namespace) -> int:
    import json

    from simulator.integration_env import integration_env, shell_exports

    values = _with_admin(
        args, "env", lambda admin: integration_env(admin, args.site, args.client, args.private_key)
    )
    if values is None:
        return 1
    print(
        json.dumps(values, indent=2) if args.json else shell_exports(values),
        end="" if not args.json else "\n",
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ehrsim", description="EHR sandbox simulator")
    parser.add_argument("--version", action="version", version=f"ehrsim {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    _serve_parser(sub)
    _scenario_parser(sub)
    _generate_parser(sub)
    _conformance_parser(sub)
    _token_parser(sub)
    _env_parser(sub)
    words = list(sys.argv[1:] if argv is None else argv)
    # What follows `--` is the integration's command line (`conformance client`), kept verbatim.
    cut = words.index("--") if "--" in words else len(words)
    args = parser.parse_args(words[:cut])
    args.integration = words[cut + 1 :]
    if args.integration and getattr(args, "suite", None) != "client":
        parser.error("only `ehrsim conformance client` takes a command after --")
    if args.command == "serve":
        return serve(args)
    if args.command == "scenario":
        return scenario_command(args)
    if args.command == "conformance":
        return conformance_command(args)
    if args.command == "generate":
        return generate(args)
    if args.command == "token":
        return token(args)
    if args.command == "env":
        return env(args)
    parser.error(f"unknown command {args.command}")
    return 2


def scenario_command(args: argparse.Namespace) -> int:
    from simulator import scenario as scenarios

    if args.scenario_command == "validate":
        failed = 0
        for name in args.files:
            problems = scenarios.validate_file(name)
            for problem in problems:
                print(problem, file=sys.stderr)
            if problems:
                failed += 1
                print(f"{name}: {len(problems)} problem(s)", file=sys.stderr)
            else:
                print(f"{name}: ok")
        return 1 if failed else 0
    if args.scenario_command == "list":
        for name, description in scenarios.shipped():
            print(f"{name:<16} {description}")
        return 0
    try:
        resolved = scenarios.resolved(args.name)
    except scenarios.ScenarioError as exc:
        print(f"ehrsim: {exc}", file=sys.stderr)
        return 1
    if args.format == "json":
        import json

        print(json.dumps(resolved, indent=2, default=str))
    else:
        import yaml

        print(yaml.safe_dump(resolved, sort_keys=False, default_flow_style=False), end="")
    return 0


def serve(args: argparse.Namespace) -> int:
    import uvicorn

    from simulator.app import create_app
    from simulator.sandbox import Sandbox
    from simulator.scenario import ScenarioError, load_scenario, parse_seed

    started = time.monotonic()
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if args.log_format == "json":
        from simulator.logformat import JsonFormatter

        for handler in logging.getLogger().handlers:
            handler.setFormatter(JsonFormatter())
    try:
        tls = _tls_files(args)
    except (ValueError, OSError) as exc:
        print(f"ehrsim: {_one_line(exc)}", file=sys.stderr)
        return 2
    try:
        scenario = load_scenario(args.scenario)
        if args.seed is not None:
            scenario.seed = parse_seed(args.seed)
        options = {"mllp_port": args.mllp_port, "host": args.host}
        if args.no_journal:
            options["journal"] = False
        if args.admin_token:
            options["admin_token"] = args.admin_token
        if args.no_auth:
            options["auth"] = "off"
        sandbox = Sandbox(scenario, store=args.store, options=options)
    except (ScenarioError, ValueError, OSError) as exc:
        print(f"ehrsim: {exc}", file=sys.stderr)
        return 2
    # The store holds the population and everything written since as long-lived dicts, which the
    # cyclic collector would otherwise rescan over and over (simulator/gcpolicy.py).
    gcpolicy.install()
    app = create_app(sandbox)
    config = uvicorn.Config(
        app,
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        access_log=False,
        lifespan="on",
        server_header=False,
        ssl_certfile=tls[0] if tls else None,
        ssl_keyfile=tls[1] if tls else None,
    )

    class Server(uvicorn.Server):
        async def startup(self, sockets=None) -> None:  # type: ignore[no-untyped-def]
            await super().startup(sockets)
            if self.should_exit:
                return
            host = "127.0.0.1" if args.host in ("0.0.0.0", "::") else args.host
            origin = f"{'https' if tls else 'http'}://{host}:{args.port}"
            print(
                f"ehrsim {__version__}: scenario '{scenario.name}' ready in {time.monotonic() - started:.2f}s"
            )
            for runtime in sandbox.sites.values():
                site = runtime.site
                print(f"  site {site.id}: FHIR {origin}{site.base_path}  ({site.store.count()} resources)")
                if "auth" in site.extras:
                    print(f"    SMART: {origin}{site.base_path}/.well-known/smart-configuration")
                if "mllp_port" in site.extras:
                    print(f"  site {site.id}: MLLP {site.extras['mllp_host']}:{site.extras['mllp_port']}")
            if tls:
                print(f"  TLS certificate: {tls[0]} (a client trusts it with e.g. curl --cacert)")
            print(f"  admin: {origin}/_admin/health")
            print(f"  dashboard: {origin}/_admin/ui")
            if sandbox.options.get("admin_token"):
                print(f"  admin token: {sandbox.options['admin_token']}")
            sys.stdout.flush()

    server = Server(config)
    server.run()
    return 0 if server.started else 1


def _one_line(exc: BaseException) -> str:
    """An error as one line: OSError's str() is "[Errno 13] Permission denied: 'path'"."""
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.filename}: {exc.strerror}" if exc.filename else exc.strerror
    return " ".join(str(exc).split())


def generate(args: argparse.Namespace) -> int:
    from pathlib import Path

    from simulator.population.export import write_population
    from simulator.sandbox import Sandbox
    from simulator.scenario import ScenarioError, load_scenario, parse_seed

    started = time.monotonic()
    try:
        scenario = load_scenario(args.scenario)
        if args.seed is not None:
            scenario.seed = parse_seed(args.seed)
        known = [s.id for s in scenario.sites]
        unknown = sorted(set(args.site or ()) - set(known))
        if unknown:
            raise ScenarioError(
                f"no site {', '.join(unknown)} in scenario '{scenario.name}' (sites: {', '.join(known)})"
            )
        if args.patients is not None:
            if args.patients < 0:
                raise ScenarioError("--patients must be 0 or more")
            for spec in scenario.sites:
                spec.patients = args.patients
        # The sites exactly as `ehrsim serve` builds them (id formats included); the export then
        # replays each site's id sequence from the start, so the files carry the served ids.
        sandbox = Sandbox(scenario, layers=[], service_factories=[])
    except (ScenarioError, ValueError, OSError) as exc:
        print(f"ehrsim: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out)
    try:
        for spec in scenario.sites:
            if args.site and spec.id not in args.site:
                continue
            site = sandbox.sites[spec.id].site
            site.reset_sequences()
            counts = write_population(sandbox.population(site, spec), out / spec.id, args.format)
            total = sum(counts.values())
            print(
                f"site {spec.id}: {total} resources ({counts.get('Patient', 0)} patients) -> {out / spec.id}"
            )
    except OSError as exc:
        print(f"ehrsim: cannot write {out}: {exc}", file=sys.stderr)
        return 2
    finally:
        sandbox.close()
    print(f"done in {time.monotonic() - started:.1f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
