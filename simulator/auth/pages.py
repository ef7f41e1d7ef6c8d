"""The HTML a person sees during an authorization: sign-in, patient picker, approve or deny.

Plain server-rendered forms (no script), so they work in any browser and in a scripted HTTP client.
"""

from __future__ import annotations

from html import escape
from typing import Any

_STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:40rem;margin:2rem auto;padding:0 1rem}"
    "fieldset{margin:1rem 0}label{display:block;padding:.2rem 0}.error{color:#a00}"
)


def _name(resource: dict[str, Any]) -> str:
    for name in resource.get("name") or []:
        if isinstance(name, dict):
            text = name.get("text") or " ".join([*name.get("given", []), name.get("family", "")]).strip()
            if text:
                return str(text)
    return str(resource.get("id", ""))


def authorize_page(
    action: str,
    txn: str,
    client_name: str,
    scopes: list[str],
    patients: list[dict[str, Any]] | None,
    users: list[dict[str, Any]],
    error: str = "",
) -> str:
    """The sign-in and approval form; `patients` is None when the launch already fixed the patient."""
    parts = [
        "<!doctype html><html lang=en><head><meta charset=utf-8>",
        f"<title>ehrsim sign-in</title><style>{_STYLE}</style></head><body>",
        "<h1>ehrsim: authorize an app</h1>",
        f"<p><strong>{escape(client_name)}</strong> asks for:</p><ul>",
        *(f"<li><code>{escape(s)}</code></li>" for s in scopes),
        "</ul>",
    ]
    if error:
        parts.append(f'<p class="error" role="alert">{escape(error)}</p>')
    parts.append(f'<form method="post" action="{escape(action)}">')
    parts.append(f'<input type="hidden" name="txn" value="{escape(txn)}">')
    if users:
        parts.append("<fieldset><legend>Sign in as</legend>")
        for index, user in enumerate(users):
            ref = f"{user['resourceType']}/{user['id']}"
            checked = " checked" if index == 0 else ""
            parts.append(
                f'<label><input type="radio" name="user" value="{escape(ref)}"{checked}> '
                f"{escape(_name(user))} ({escape(ref)})</label>"
            )
        parts.append("</fieldset>")
    if patients is not None:
        parts.append("<fieldset><legend>Choose a patient</legend>")
        for patient in patients:
            parts.append(
                f'<label><input type="radio" name="patient" value="{escape(patient["id"])}" required> '
                f"{escape(_name(patient))} ({escape(str(patient.get('birthDate', '')))}), "
                f"Patient/{escape(patient['id'])}</label>"
            )
        parts.append("</fieldset>")
    parts.append('<button name="decision" value="approve">Approve</button> ')
    parts.append('<button name="decision" value="deny" formnovalidate>Deny</button>')
    parts.append("</form></body></html>")
    return "".join(parts)
