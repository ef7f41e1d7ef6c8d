"""Where a site's SMART authorization server lives and how it describes itself: the endpoint
paths, `.well-known/smart-configuration` and the CapabilityStatement's `oauth-uris` extension."""

from __future__ import annotations

from typing import Any

from simulator.auth.settings import AuthSettings

# Endpoint paths below the site's FHIR base.
DISCOVERY = "/.well-known/smart-configuration"
AUTHORIZE = "/auth/authorize"
DECISION = "/auth/authorize/decision"
TOKEN = "/auth/token"
INTROSPECT = "/auth/introspect"
REVOKE = "/auth/revoke"
REGISTER = "/auth/register"
JWKS = "/auth/jwks"
PATHS = (DISCOVERY, AUTHORIZE, DECISION, TOKEN, INTROSPECT, REVOKE, REGISTER, JWKS)
# For the journal and fault matching: these paths are protocol "auth", not "fhir".
PROTOCOL_PREFIXES = {"/auth": "auth", DISCOVERY: "auth"}
OAUTH_URIS = "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris"


def endpoint_urls(base: str) -> dict[str, str]:
    """The endpoints under a FHIR base, by their oauth-uris names."""
    return {
        "authorize": base + AUTHORIZE,
        "token": base + TOKEN,
        "introspect": base + INTROSPECT,
        "revoke": base + REVOKE,
        "register": base + REGISTER,
        "jwks": base + JWKS,
    }


def discovery_urls(base: str) -> dict[str, str]:
    """Where a client finds the server: for `/_admin/sites` and the start-up banner."""
    urls = endpoint_urls(base)
    return {"configuration": base + DISCOVERY, "authorize": urls["authorize"], "token": urls["token"]}


def smart_configuration(settings: AuthSettings, base: str) -> dict[str, Any]:
    """The discovery document (SMART App Launch 2.x); `settings.discovery` adds or overrides fields."""
    urls = endpoint_urls(base)
    doc: dict[str, Any] = {
        "issuer": base,
        "jwks_uri": urls["jwks"],
        "authorization_endpoint": urls["authorize"],
        "token_endpoint": urls["token"],
        "introspection_endpoint": urls["introspect"],
        "revocation_endpoint": urls["revoke"],
        "registration_endpoint": urls["register"],
        "grant_types_supported": settings.grant_types,
        "response_types_supported": ["code"],
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": settings.client_auth,
        "token_endpoint_auth_signing_alg_values_supported": settings.backend_jwt_alg,
        "id_token_signing_alg_values_supported": ["RS256"],
        "scopes_supported": settings.scopes_supported,
        "capabilities": settings.advertised_capabilities(),
    }
    doc.update(settings.discovery)
    return doc


def capability_security(base: str) -> dict[str, Any]:
    """CapabilityStatement.rest.security: the `oauth-uris` extension and the SMART service code."""
    urls = endpoint_urls(base)
    return {
        "extension": [
            {
                "url": OAUTH_URIS,
                "extension": [
                    {"url": key, "valueUri": urls[key]}
                    for key in ("authorize", "token", "introspect", "revoke", "register")
                ],
            }
        ],
        "service": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/restful-security-service",
                        "code": "SMART-on-FHIR",
                    }
                ],
                "text": "OAuth2 using SMART-on-FHIR profile (see http://docs.smarthealthit.org)",
            }
        ],
    }
