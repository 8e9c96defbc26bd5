"""The links ``ipt-cds serve --sandbox`` prints: the public CDS Hooks sandbox opened on this
service, the FHIR server the fixtures were loaded into, and a fixture patient.

The sandbox reads these query parameters (cds-hooks/sandbox, src/components/MainView and
src/retrieve-data-helpers): ``serviceDiscoveryURL`` (comma-separated), ``fhirServiceUrl``,
``patientId``, and ``hook`` with ``screen`` for the tab (``patient-view``; ``order-select`` on
``rx-view``, the Rx View). Without ``fhirServiceUrl`` and ``patientId`` it opens its own public
FHIR server and a patient of its own, whom no fixture describes.
"""

from __future__ import annotations

from typing import TextIO
from urllib.parse import urlencode

SANDBOX = "https://sandbox.cds-hooks.org/"
# The open FHIR server of docs/integration.md section 7, when the allowlist names none.
DOCS_FHIR_SERVER = "http://127.0.0.1:8091/fhir"
# Severe recurrent depression, no antidepressant: the chart card warns (IPT with an
# antidepressant), and an antidepressant chosen in the Rx View gets "Consider adding IPT".
PATIENT = "in-summary-combine-no-antidepressant"


def fhir_server(fhir_allowlist: list[str]) -> str:
    """The FHIR server the sandbox is sent to: the first the service may call."""
    return fhir_allowlist[0] if fhir_allowlist else DOCS_FHIR_SERVER


def sandbox_links(discovery_url: str, fhir: str, page: str = SANDBOX) -> list[tuple[str, str]]:
    """(what, URL) for the Patient View and the Rx View of the sandbox at ``page``."""
    common = {"serviceDiscoveryURL": discovery_url, "fhirServiceUrl": fhir, "patientId": PATIENT}
    views = [
        ("Patient View (ipt-patient-view)", {"hook": "patient-view", "screen": "patient-view"}),
        (
            "Rx View (ipt-order-select: choose an antidepressant)",
            {"hook": "order-select", "screen": "rx-view"},
        ),
    ]
    # ':' and '/' left as they are: the link stays readable, and the sandbox decodes either.
    return [(what, page + "?" + urlencode({**common, **view}, safe=":/")) for what, view in views]


def print_links(
    discovery_url: str, fhir_allowlist: list[str], out: TextIO, page: str = SANDBOX
) -> None:
    """What ``ipt-cds serve --sandbox`` prints before the server starts."""
    fhir = fhir_server(fhir_allowlist)
    out.write(
        "ipt-cds: the CDS Hooks sandbox may call this service. Load the fixtures into the open "
        f"FHIR server {fhir} first (docs/integration.md section 7), then open\n"
    )
    links = sandbox_links(discovery_url, fhir, page)
    out.writelines(f"  {what}: {url}\n" for what, url in links)
