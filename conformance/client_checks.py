"""Client checks: how an integration behaved under faults, judged from the journal of one run.

The integration talks to a sandbox (a scenario with faults); afterwards each check reads the
sandbox's journal through the admin API and asks `simulator/verify.py` (served at
`/_admin/journal/verify`) the question its requirement poses: Retry-After honoured, backoff
during errors, recovery after an outage window, no duplicate writes, new tokens after a 401, MLLP
resends with the same MSH-10 and without flooding, Bulk Data status polls timed by Retry-After, and
the integration's own MLLP listener (fed by the scenario's outbound feeds) acknowledging every
message and accepting valid ones. A check is skipped when the run did not exercise it (e.g. no 429
was served), and a scenario's own `expect:` list becomes checks of group `expect`.

    results = run_client_checks("http://127.0.0.1:8080")   # conformance.report renders them

Times are simulated seconds since the sandbox's clock start (the journal's `sim`).
"""

from __future__ import annotations

import glob
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from conformance.check import Check, CheckSkipped, Target, check, expect
from conformance.runner import Result, run_checks
from simulator.admin_client import AdminClient, AdminError
from simulator.faults.schedule import Schedule
from simulator.mllp.feeds import VALID_DEFECTS

CLIENT_CHECKS: dict[str, Check] = {}
RFC9110 = "https://www.rfc-editor.org/rfc/rfc9110"
FHIR_HTTP = "https://hl7.org/fhir/R4/http.html"
HL7V2_ACK = "HL7 v2.5.1 Chapter 2, 2.9 (original acknowledgment mode: resend with the same MSH-10)"
HL7V2_RESPONDER = "HL7 v2.5.1 Chapter 2, 2.9.2 (the receiver acknowledges each message; MSA-2 = its MSH-10)"
BULK_STATUS = "https://hl7.org/fhir/uv/bulkdata/STU2/export.html#bulk-data-status-request"

# Timed faults that take a site down; recovery is judged after their windows close.
OUTAGE_ACTIONS = frozenset({"outage", "status", "reset", "hang", "refuse", "accept_close"})
# MLLP faults after which the sender never sees an ACK and must resend.
NO_ACK_ACTIONS = ("lost_ack", "never_ack")
SHOWN = 5  # problems quoted in a failure message; the rest are counted


@dataclass(frozen=True)
class Thresholds:
    """What counts as well-behaved; `ehrsim conformance client` takes them as options."""

    min_gap: float = 0.5  # seconds between retries while the server fails
    backoff: float | None = None  # each retry gap at least this times the previous (None: off)
    dead_token_retries: int = 1  # requests with a refused token before fetching a new one
    resend_min_gap: float = 0.5  # seconds between resends of one MLLP message


@dataclass
class JournalTarget(Target):
    """One run's sandbox, read through its admin API (the journal is fetched once)."""

    admin: AdminClient | None = None
    thresholds: Thresholds = field(default_factory=Thresholds)

    @property
    def api(self) -> AdminClient:
        assert self.admin is not None
        return self.admin

    def entries(self) -> list[dict[str, Any]]:
        if "entries" not in self.cache:
            self.cache["entries"] = self.api.export()
            self.cache["by_seq"] = {e["seq"]: e for e in self.cache["entries"]}
        return self.cache["entries"]

    def entry(self, seq: int) -> dict[str, Any]:
        self.entries()
        return self.cache["by_seq"][seq]

    def faults(self) -> list[dict[str, Any]]:
        if "faults" not in self.cache:
            self.cache["faults"] = self.api.faults()
        return self.cache["faults"]

    def elapsed(self) -> float:
        """Simulated seconds now (the run's end)."""
        return float(self.api.clock()["elapsed"])

    def verify(self, check: str, **spec: Any) -> dict[str, Any]:
        """The server's verification of the journal; a spec it refuses is the run's error."""
        try:
            return self.api.verify(check, **spec)
        except AdminError as exc:
            raise ValueError(f"journal verification {check} refused: {exc}") from None


def exactly(value: Any) -> str:
    """A filter glob matching `value` literally (ids and MSH-10s may hold * ? [)."""
    return glob.escape(str(value))


def describe(entry: dict[str, Any]) -> str:
    """`seq 41 (GET /Patient -> 429, 12.3 s)`: an entry as a failure message names it."""
    if entry.get("protocol") == "outbound":
        what = f"feed {entry.get('feed')} {entry.get('kind')} MSH-10 {entry.get('control_id')!r}"
        if entry.get("kind") == "delivery":
            what += f" ({entry.get('message_type')}, attempt {entry.get('attempt')})"
        elif entry.get("kind") == "ack":
            what += f" -> {entry.get('ack_code') or entry.get('outcome')}"
    elif entry.get("protocol") == "mllp" and entry.get("kind") != "message":
        what = f"MLLP {entry.get('kind')} {entry.get('event') or ''}".rstrip()
    elif entry.get("protocol") == "mllp":
        what = f"{entry.get('message_type')} MSH-10 {entry.get('control_id')!r} -> {entry.get('ack_code')}"
    else:
        status = entry.get("status") or "no response"
        what = f"{entry.get('method')} {entry.get('path') or '[base]'} -> {status}"  # "": a bundle
    faults = entry.get("faults") or ()
    touched = f", fault {'/'.join(faults)}: {entry.get('outcome')}" if faults else ""
    return f"seq {entry['seq']} ({what}, {entry.get('sim', 0.0):.2f} s{touched})"


def listed(problems: list[str]) -> str:
    more = f"; and {len(problems) - SHOWN} more" if len(problems) > SHOWN else ""
    return "; ".join(problems[:SHOWN]) + more


def _http(entry: dict[str, Any]) -> bool:
    return entry.get("protocol") in ("fhir", "auth")


def _retry_after(entry: dict[str, Any]) -> str | None:
    return (entry.get("response_headers") or {}).get("retry-after")


def _client_filter(site: str, client: str | None) -> dict[str, Any]:
    return {"site": exactly(site), **({"client_id": exactly(client)} if client else {})}


@check(
    "client_retry_after",
    "Honours Retry-After after 429 and 503",
    f"{RFC9110}#section-10.2.3",
    "client",
    CLIENT_CHECKS,
)
def honours_retry_after(t: JournalTarget) -> None:
    """After a 429 or 503 carrying Retry-After, the client sends nothing to that site before the advertised time has passed"""
    told = [e for e in t.entries() if _http(e) and e.get("status") in (429, 503) and _retry_after(e)]
    if not told:
        raise CheckSkipped("no 429 or 503 with Retry-After was served in this run")
    problems = [
        f"request {describe(early)} came {early['sim'] - answer['sim']:.2f} s after a "
        f"{answer['status']} (seq {answer['seq']}) that said Retry-After: {_retry_after(answer)} "
        f"({early_by:.2f} s early)"
        for early, answer, early_by in _too_early(t, told)
    ]
    expect(not problems, listed(problems))


def _too_early(
    t: JournalTarget, told: list[dict[str, Any]], narrow: dict[str, Any] | None = None
) -> list[tuple[dict[str, Any], dict[str, Any], float]]:
    """(early request, the answer whose Retry-After it ignored, seconds early) for each client that
    was told to wait, among its entries (`narrow`: a further journal filter)."""
    found = []
    for site, client in sorted({(e["site"], e.get("client_id") or "") for e in told}):
        spec = {**_client_filter(site, client), **(narrow or {})}
        for violation in t.verify("retry_after", filter=spec)["violations"]:
            found.append((t.entry(violation["seq"]), t.entry(violation["after_seq"]), violation["early_by"]))
    return found


@check(
    "client_bulk_polling",
    "Polls a Bulk Data export no sooner than its Retry-After",
    BULK_STATUS,
    "client",
    CLIENT_CHECKS,
)
def bulk_polling(t: JournalTarget) -> None:
    """While a `$export` is in progress its status URL answers 202 with Retry-After; clients SHOULD use it to time their next poll of that status URL"""
    told = [
        e
        for e in t.entries()
        if e.get("interaction") == "bulk-status" and e.get("status") == 202 and _retry_after(e)
    ]
    if not told:
        raise CheckSkipped("no Bulk Data status poll was answered 202 with Retry-After in this run")
    problems = [
        f"poll {describe(early)} came {early['sim'] - answer['sim']:.2f} s after the 202 of "
        f"seq {answer['seq']} that said Retry-After: {_retry_after(answer)} ({early_by:.2f} s early)"
        for early, answer, early_by in _too_early(t, told, {"interaction": exactly("bulk-status")})
    ]
    expect(not problems, listed(problems))


def error_streaks(entries: Iterable[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """Runs of consecutive HTTP exchanges of one (site, client) that got a 5xx or no response."""
    streaks: list[list[dict[str, Any]]] = []
    current: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for entry in entries:
        if not _http(entry):
            continue
        key = (entry["site"], entry.get("client_id") or "")
        status = entry.get("status")
        if status is None or status >= 500:
            current.setdefault(key, []).append(entry)
        elif key in current:
            streaks.append(current.pop(key))
    streaks += current.values()
    return [s for s in streaks if len(s) > 1]


@check(
    "client_backoff",
    "Backs off while the server fails instead of hammering it",
    f"{RFC9110}#section-15.6.4",
    "client",
    CLIENT_CHECKS,
)
def backs_off(t: JournalTarget) -> None:
    """While requests fail with 5xx or dropped connections, the client waits between retries (at least `min_gap` seconds; with `backoff`, each wait at least that factor times the previous)"""
    entries = t.entries()
    if not any(_http(e) and (e.get("status") is None or e["status"] >= 500) for e in entries):
        raise CheckSkipped("no request met a server error (5xx) or a dropped connection in this run")
    limits = {"min_gap": t.thresholds.min_gap}
    if t.thresholds.backoff is not None:
        limits["backoff"] = t.thresholds.backoff
    problems = []
    for streak in error_streaks(entries):
        first, last = streak[0], streak[-1]
        found = t.verify(
            "gaps",
            filter={
                **_client_filter(first["site"], first.get("client_id")),
                "since": first["sim"],
                "until": last["sim"],
            },
            **limits,
        )
        if not found["ok"]:
            problems.append(
                f"client {first.get('client_id')} sent {found['count']} failing requests in "
                f"{last['sim'] - first['sim']:.2f} s, from {describe(first)} to seq {last['seq']}: "
                + ", ".join(found["problems"][:3])
            )
    expect(not problems, listed(problems))


def _outage(fault: dict[str, Any]) -> bool:
    action = fault["action"]
    if action.get("type") == "status":
        return int(action.get("status", 500)) >= 500  # an injected 404 is no outage
    return action.get("type") in OUTAGE_ACTIONS


def window_end(schedule: Schedule, moment: float) -> float:
    """When the time window open at `moment` closes."""
    if schedule.length is None:
        return math.inf
    since = moment - schedule.after
    period = math.floor(since / schedule.every) if schedule.every else 0
    return schedule.after + period * (schedule.every or 0) + schedule.length


@check(
    "client_recovers",
    "Recovers after an outage window",
    f"{RFC9110}#section-15.6.4",
    "client",
    CLIENT_CHECKS,
)
def recovers(t: JournalTarget) -> None:
    """Once a timed outage (503, 5xx, resets, hangs, a refused MLLP port) is over, the client succeeds again: at least one successful exchange with the site after the window closes"""
    timed = [f for f in t.faults() if _outage(f) and ("after" in f["schedule"] or "for" in f["schedule"])]
    # Exchanges only: the MLLP listener's own `refusing` event is no client's (refused connects
    # leave no entry, so a refuse window is judged only through the exchanges it touched).
    exchanges = [e for e in t.entries() if e.get("kind") != "listener"]
    hit = {f["id"]: [e for e in exchanges if f["id"] in (e.get("faults") or ())] for f in timed}
    judged = [f for f in timed if hit[f["id"]]]
    if not judged:
        raise CheckSkipped("no exchange met a timed outage fault in this run")
    now = t.elapsed()
    problems, waiting = [], []
    for fault in judged:
        last = hit[fault["id"]][-1]
        end = window_end(Schedule.from_mapping(fault["schedule"]), last["sim"])
        if end > now:
            waiting.append(
                f"fault '{fault['id']}' window closes at {end:.2f} s, the run ended at {now:.2f} s"
            )
            continue
        if last.get("protocol") == "mllp":
            # accepted: AA, CA or CA+AA (not AE/AR/CE/CR, nor a duplicate's 'resent')
            success = {"protocol": "mllp", "kind": "message", "ack_code": "*A"}
        else:
            success = {"protocol": exactly(last["protocol"]), "status": "2xx"}
        found = t.verify("count", filter={"site": exactly(last["site"]), "since": end, **success}, at_least=1)
        if not found["ok"]:
            problems.append(
                f"no successful {last['protocol']} exchange with site {last['site']} after fault "
                f"'{fault['id']}' ended at {end:.2f} s (its last victim: {describe(last)}; run ended at {now:.2f} s)"
            )
    if waiting and not problems and len(waiting) == len(judged):
        raise CheckSkipped("; ".join(waiting) + ": the run ended inside the window")
    expect(not problems, listed(problems))


@check(
    "client_no_duplicate_writes",
    "Does not create duplicates when retrying writes",
    f"{FHIR_HTTP}#ccreate",
    "client",
    CLIENT_CHECKS,
)
def no_duplicate_writes(t: JournalTarget) -> None:
    """A create retried after a lost or failed response does not create the resource twice (e.g. If-None-Exist on its identifier, also inside a transaction or batch): no two created resources (201, on their own or as a Bundle entry) share a business identifier"""
    found = t.verify("duplicates", key="identifier", filter={"method": "POST", "status": "2xx"})
    if found["identified"] == 0:
        raise CheckSkipped("no resource with a business identifier was created (201) in this run")
    problems = [
        f"{identifier} was created {len(seqs)} times: " + ", ".join(describe(t.entry(s)) for s in seqs)
        for identifier, seqs in found["duplicates"].items()
    ]
    expect(not problems, listed(problems))


def _refused_token(entry: dict[str, Any]) -> bool:
    challenge = (entry.get("response_headers") or {}).get("www-authenticate", "")
    return entry.get("protocol") == "fhir" and entry.get("status") == 401 and "invalid_token" in challenge


def _new_token(entry: dict[str, Any]) -> bool:
    return (
        entry.get("protocol") == "auth"
        and entry.get("status") == 200
        and str(entry.get("path", "")).endswith("token")
    )


@check(
    "client_token_refresh",
    "Gets a new token after a 401 instead of retrying the dead one",
    "https://www.rfc-editor.org/rfc/rfc6750#section-3.1",
    "client",
    CLIENT_CHECKS,
)
def refreshes_tokens(t: JournalTarget) -> None:
    """After a 401 with error="invalid_token" (expired or revoked), the client sends at most `dead_token_retries` more requests before getting a new token from the token endpoint, and then succeeds"""
    entries = t.entries()
    refused = [e for e in entries if _refused_token(e)]
    if not refused:
        raise CheckSkipped('no request was refused with 401 error="invalid_token" in this run')
    tokens = [e for e in entries if _new_token(e)]
    allowed = t.thresholds.dead_token_retries
    problems = []
    judged_until: dict[tuple[str, str], float] = {}
    for first in refused:
        key = (first["site"], first.get("client_id") or "")
        if first["seq"] <= judged_until.get(key, -1):
            continue  # part of an episode already judged
        fresh = next((e for e in tokens if e["seq"] > first["seq"]), None)
        window = {"since": first["sim"], **({"until": fresh["sim"]} if fresh else {})}
        dead = t.verify("count", filter={**_client_filter(*key), "status": "401", **window})
        judged_until[key] = fresh["seq"] if fresh else math.inf
        retries = dead["count"] - 1
        if fresh is None:
            problems.append(
                f"after {describe(first)} client {key[1]} never got a new token ({retries} more 401s)"
            )
            continue
        if retries > allowed:
            problems.append(
                f"after {describe(first)} client {key[1]} retried the dead token {retries} times "
                f"(at most {allowed}) before getting a new one at seq {fresh['seq']}"
            )
        ok = t.verify(
            "count", filter={**_client_filter(*key), "status": "2xx", "since": fresh["sim"]}, at_least=1
        )
        if not ok["ok"]:
            problems.append(
                f"client {key[1]} got a new token at seq {fresh['seq']} but no request succeeded after it"
            )
    expect(not problems, listed(problems))


def _mllp_resends(t: JournalTarget) -> dict[str, list[int]]:
    """MSH-10 -> the seqs of the messages that carried it, for MSH-10s sent more than once."""
    return t.verify("duplicates", key="control_id", filter={"protocol": "mllp", "kind": "message"})[
        "duplicates"
    ]


@check(
    "client_mllp_resend",
    "Resends an unacknowledged HL7 v2 message with the same MSH-10",
    HL7V2_ACK,
    "client",
    CLIENT_CHECKS,
)
def mllp_resends(t: JournalTarget) -> None:
    """When the ACK to a message is lost or never comes, the sender sends the same message again with the same MSH-10 (so the receiver can tell a resend from a new message)"""
    unacked = [
        e
        for e in t.entries()
        if e.get("protocol") == "mllp"
        and e.get("kind") == "message"
        and any(a in str(e.get("outcome") or "") for a in NO_ACK_ACTIONS)
    ]
    if not unacked:
        raise CheckSkipped("no MLLP message lost its ACK in this run")
    resends = _mllp_resends(t)
    problems = []
    for entry in unacked:
        if any(seq > entry["seq"] for seq in resends.get(str(entry.get("control_id")), ())):
            continue
        later = [
            e.get("control_id")
            for e in t.entries()
            if e["seq"] > entry["seq"] and e.get("protocol") == "mllp" and e.get("kind") == "message"
        ]
        problems.append(
            f"{describe(entry)} got no ACK and was never resent with that MSH-10"
            + (
                f"; {len(later)} later message(s) carried other MSH-10s ({', '.join(map(str, later[:3]))})"
                if later
                else ""
            )
        )
    expect(not problems, listed(problems))


@check(
    "client_mllp_no_flood",
    "Waits between resends of an HL7 v2 message",
    HL7V2_ACK,
    "client",
    CLIENT_CHECKS,
)
def mllp_no_flood(t: JournalTarget) -> None:
    """Resends of one message (same MSH-10) are at least `resend_min_gap` seconds apart"""
    resends = _mllp_resends(t)
    if not resends:
        raise CheckSkipped("no MLLP message was sent twice in this run")
    problems = []
    for control_id, seqs in resends.items():
        found = t.verify(
            "gaps",
            filter={"protocol": "mllp", "kind": "message", "control_id": exactly(control_id)},
            min_gap=t.thresholds.resend_min_gap,
        )
        if not found["ok"]:
            problems.append(
                f"MSH-10 {control_id!r} was sent {len(seqs)} times (seqs {', '.join(map(str, seqs))}): "
                + ", ".join(found["problems"][:3])
            )
    expect(not problems, listed(problems))


def _feed_answers(t: JournalTarget) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(delivery, what came of it) for every message an outbound feed wrote to the integration's
    listener: the ACK entry that ended the wait for it (accepted, error, rejected, timeout or a
    dropped connection) or each ACK with a wrong MSA-2 while it waited."""
    answers = []
    waiting: dict[str, list[dict[str, Any]]] = {}  # per feed: deliveries written, not yet answered
    for entry in t.entries():
        if entry.get("protocol") != "outbound":
            continue
        pending = waiting.setdefault(f"{entry.get('site')}/{entry.get('feed')}", [])
        kind, outcome = entry.get("kind"), entry.get("outcome")
        if kind == "delivery":
            pending.append(entry)
        elif kind == "ack" and pending:
            if outcome == "mismatch":
                answers.append((pending[0], entry))  # the sender goes on waiting for the right one
            elif outcome in ("timeout", "connection"):
                answers.append((pending[0], entry))
                pending.clear()  # the attempt is over; the rest are written again
            else:
                answers.append((pending.pop(0), entry))
    return answers


@check(
    "client_listener_acks",
    "Its MLLP listener acknowledges every message it receives",
    HL7V2_RESPONDER,
    "client",
    CLIENT_CHECKS,
)
def listener_acks(t: JournalTarget) -> None:
    """Every message an outbound feed delivers to the integration's listener is answered on the same connection, within the feed's ack_timeout, by an ACK whose MSA-2 is the message's MSH-10 (an AE or AR is an answer; silence, a wrong MSA-2 or a dropped connection is not)"""
    answers = _feed_answers(t)
    if not answers:
        raise CheckSkipped("no outbound feed delivered a message to the integration's listener in this run")
    failures: dict[str, list[str]] = {}  # per message (feed and MSH-10): what each attempt got
    for delivery, answer in answers:
        outcome = answer.get("outcome")
        if outcome == "timeout":
            why = f"no ACK within {answer.get('after')} s"
        elif outcome == "mismatch":
            why = f"an ACK with MSA-2 {answer.get('msa2')!r}"
        elif outcome == "connection":
            why = f"the connection ended before an ACK ({answer.get('error')})"
        else:
            continue
        key = f"{delivery.get('feed')}/{delivery.get('control_id')}"
        failures.setdefault(key, []).append(f"{describe(delivery)} got {why} (seq {answer['seq']})")
    problems = [
        got[0] + (f"; {len(got) - 1} more time(s) for this message" if len(got) > 1 else "")
        for got in failures.values()
    ]
    expect(not problems, listed(problems))


@check(
    "client_listener_accepts",
    "Its MLLP listener accepts valid messages, messy ones included",
    "HL7 v2.5.1 Chapter 2, 2.5.4 (Z segments), 2.A (repetitions, local code systems, optional time zone)",
    "client",
    CLIENT_CHECKS,
)
def listener_accepts(t: JournalTarget) -> None:
    """The integration's listener answers AA (or CA) to valid messages: clean ones and those whose only defects keep them valid HL7 v2 (Z-segments, several patient identifiers, local codes, timestamps without a time zone, a large embedded document, two frames in one write)"""
    judged = [
        (delivery, answer)
        for delivery, answer in _feed_answers(t)
        if answer.get("outcome") in ("accepted", "error", "rejected")
        and set(delivery.get("defects") or ()) <= VALID_DEFECTS
    ]
    if not judged:
        raise CheckSkipped("the integration's listener acknowledged no valid message in this run")
    problems = [
        f"{describe(delivery)} was answered {answer.get('ack_code')} (seq {answer['seq']})"
        + (f"; its defects: {', '.join(delivery['defects'])}" if delivery.get("defects") else "")
        for delivery, answer in judged
        if answer.get("outcome") != "accepted"
    ]
    expect(not problems, listed(problems))


# -- the scenario's own `expect:` list -------------------------------------------------------------
def findings(result: dict[str, Any]) -> str:
    """What a failed verification found, in words."""
    kind = result.get("check")
    if kind == "order":
        return f"step {result.get('missing_step', 0) + 1} of the sequence never came (matched seqs {result.get('matched_seqs')})"
    if kind == "gaps":
        return listed(result.get("problems", []))
    if kind == "retry_after":
        return listed(
            [
                f"seq {v['seq']} came {v['early_by']} s before seq {v['after_seq']}'s Retry-After allowed"
                for v in result["violations"]
            ]
        )
    if kind == "duplicates":
        return listed([f"{key} in seqs {seqs}" for key, seqs in result.get("duplicates", {}).items()])
    bounds = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in result.get("expected", {}).items())
    seqs = f" (seqs {result['seqs'][:10]})" if result.get("seqs") else ""
    return f"found {result.get('count')} matching entries, expected {bounds}{seqs}"


def expectation_checks(definition: dict[str, Any]) -> list[Check]:
    """One check per item of a scenario's `expect:` (the verification shapes plus `id`, `title`)."""
    checks = []
    for index, item in enumerate(definition.get("expect") or []):
        spec = {k: v for k, v in item.items() if k not in ("id", "title")}
        name = str(item.get("id") or index + 1)

        def run(t: JournalTarget, spec: dict[str, Any] = spec) -> None:
            result = t.verify(**spec)
            expect(result["ok"], findings(result))

        title = (
            item.get("title")
            or f"{spec.get('check')} {spec.get('filter') or spec.get('sequence') or ''}".strip()
        )
        checks.append(
            Check(
                f"expect_{name}",
                title,
                f"scenario expect[{index}]: {spec}",
                f"expect[{index}]",
                "expect",
                run,
            )
        )
    return checks


def run_client_checks(
    origin: str, admin_token: str | None = None, thresholds: Thresholds | None = None
) -> list[Result]:
    """Judge the run recorded in the journal of the sandbox at `origin` (http://host:port)."""
    with AdminClient(origin, admin_token, timeout=30) as admin:
        sites = admin.sites()
        target = JournalTarget(
            sites[0]["fhir_base"], admin.http, admin=admin, thresholds=thresholds or Thresholds()
        )
        definition = admin.scenario().get("definition") or {}
        return run_checks(target, [*CLIENT_CHECKS.values(), *expectation_checks(definition)])
