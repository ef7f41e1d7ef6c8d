"""SMART on FHIR authorization for ehrsim sites: the authorization server, scope enforcement on
data and injectable auth failures. `auth_layer` is what `simulator.assembly` registers."""

from simulator.auth.layer import auth_layer

__all__ = ["auth_layer"]
