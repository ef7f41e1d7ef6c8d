"""Vendor profiles and the quirk layers that make a site answer like Epic, Oracle Health or MEDITECH.

Profiles are data (`scenarios/vendors/*.yaml`, `profile.py`); each quirk family is one small ASGI
layer named for it, composed by `layers.vendor_quirks` around a site's FHIR API.
"""
