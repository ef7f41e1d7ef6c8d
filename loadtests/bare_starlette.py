"""The baseline for the FHIR benchmark: the least a Starlette app under uvicorn can do for a write.

`POST /fhir/Observation` parses the JSON body (orjson, as ehrsim does), gives it an id, keeps it in a
dict and answers 201 with the stored JSON, like ehrsim's default `Prefer: return=representation`.
`GET /fhir/Observation` answers a small JSON document (the HTTP floor for the search latency), and
`GET /_admin/health` answers 200 so start-up is measured the same way as ehrsim's.

    python -m loadtests.bare_starlette --port 8090

It runs uvicorn with the options `ehrsim serve` uses (one worker, auto loop/http, i.e. uvloop and
httptools from uvicorn[standard], no access log).
"""

from __future__ import annotations

import argparse
import itertools

import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

_store: dict[str, dict] = {}
_ids = itertools.count(1)


async def create(request: Request) -> Response:
    resource = orjson.loads(await request.body())
    rid = str(next(_ids))
    resource["id"] = rid
    _store[rid] = resource
    return Response(
        orjson.dumps(resource),
        status_code=201,
        media_type="application/fhir+json",
        headers={"Location": f"/fhir/Observation/{rid}"},
    )


async def search(request: Request) -> Response:
    return Response(orjson.dumps({"resourceType": "Bundle", "type": "searchset", "total": 0}))


async def health(request: Request) -> Response:
    return Response(b'{"status":"ok"}', media_type="application/json")


app = Starlette(
    routes=[
        Route("/fhir/Observation", create, methods=["POST"]),
        Route("/fhir/Observation", search, methods=["GET"]),
        Route("/_admin/health", health, methods=["GET"]),
    ]
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8090)
    args = parser.parse_args()
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        log_level="warning",
        access_log=False,
        lifespan="on",
        server_header=False,
    )


if __name__ == "__main__":
    main()
