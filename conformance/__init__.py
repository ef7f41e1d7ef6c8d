"""ehrsim's conformance suite: checks that judge a FHIR server (any server) over HTTP.

Each check is a small declarative unit (`conformance.check.Check`) with a stable id, a title, the
requirement it verifies with a link to the spec, and a `run` body of a few assertions whose failure
messages say what was expected and what came back. `conformance.runner.run_checks` runs a group
against a target and `conformance.report` writes the results as text or JUnit XML.

    ehrsim conformance server --fhir-base http://127.0.0.1:8080/fhir --junit report.xml
"""
