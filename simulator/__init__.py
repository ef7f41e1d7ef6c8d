"""ehrsim: an EHR sandbox simulator (FHIR R4, SMART on FHIR, HL7 v2 over MLLP)."""

__version__ = "0.1.0"
FHIR_VERSION = "4.0.1"
