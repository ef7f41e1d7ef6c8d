"""Strict validation of a message's structure against its HL7 version, with hl7apy's model.

Only used when a site sets `mllp: validation: strict`: hl7apy parses a message in milliseconds, far
too slow for the default fast path, but it knows every message structure of every v2 version.
"""

from __future__ import annotations

from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.exceptions import HL7apyException
from hl7apy.parser import parse_message

from simulator.mllp.er7 import SEGMENT_SEQUENCE_ERROR, UNSUPPORTED_VERSION_ID, HL7Error, Message


def validate_structure(message: Message) -> None:
    """Raise HL7Error (AE) if hl7apy finds the message invalid for its MSH-9 structure and MSH-12."""
    try:
        parsed = parse_message(message.text, validation_level=VALIDATION_LEVEL.STRICT, find_groups=True)
        parsed.validate()
    except HL7apyException as exc:
        text = str(exc)
        if "version" in text.lower() and "support" in text.lower():
            raise HL7Error(UNSUPPORTED_VERSION_ID, f"hl7apy: {text}", "MSH", field=12, reject=True) from None
        raise HL7Error(
            SEGMENT_SEQUENCE_ERROR, f"not a valid {message.message_type} (v{message.version}): {text}"
        ) from None
    except Exception as exc:  # hl7apy raises plain errors for some malformed input
        raise HL7Error(
            SEGMENT_SEQUENCE_ERROR, f"not a valid {message.message_type}: {type(exc).__name__}: {exc}"
        ) from None
