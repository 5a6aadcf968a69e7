"""The serialization seam: bytes in, domain events or rejections out; domain outputs in, bytes out.

The only package that parses or writes JSON or reads ``schemas/``. Importers use the names below;
the modules split the seam by job: ``schema`` (checks built from the schema files), ``decoding``
(input bytes to fills or rejections), ``encoding`` (output documents and bytes) and ``records``
(state documents and table records a worker reads back).
"""

from processor.codec.decoding import (
    CONFLICTING_DUPLICATE,
    INVALID_EVENT,
    INVALID_JSON,
    UNSUPPORTED_VERSION,
    FillDecoder,
    Rejection,
    decimal_or_none,
    event_timestamp,
)
from processor.codec.encoding import (
    DEAD_LETTER_DETAIL_LIMIT,
    DEAD_LETTER_KEY_LIMIT,
    DEAD_LETTER_VALUE_LIMIT,
    OUTPUT_VERSION,
    DeadLetter,
    amount_text,
    dead_letter_document,
    dead_letter_key,
    delta_document,
    dumps,
    encode_dead_letter,
    encode_delta,
    encode_fill,
    encode_rejection,
    encode_trigger,
    loads,
    trigger_document,
)
from processor.codec.records import (
    TAIL_KEY,
    FundRecord,
    decode_fill_segment,
    decode_fund_record,
    decode_state,
    encode_fill_segment,
    encode_fund_record,
    encode_states,
    state_document,
)
from processor.codec.schema import (
    INPUT_SCHEMA,
    SCHEMA_DIR,
    SUPPORTED_VERSION,
    FieldCheck,
    JsonNumber,
    SchemaError,
)

__all__ = [
    "CONFLICTING_DUPLICATE",
    "DEAD_LETTER_DETAIL_LIMIT",
    "DEAD_LETTER_KEY_LIMIT",
    "DEAD_LETTER_VALUE_LIMIT",
    "INPUT_SCHEMA",
    "INVALID_EVENT",
    "INVALID_JSON",
    "OUTPUT_VERSION",
    "SCHEMA_DIR",
    "SUPPORTED_VERSION",
    "TAIL_KEY",
    "UNSUPPORTED_VERSION",
    "DeadLetter",
    "FieldCheck",
    "FillDecoder",
    "FundRecord",
    "JsonNumber",
    "Rejection",
    "SchemaError",
    "amount_text",
    "dead_letter_document",
    "dead_letter_key",
    "decimal_or_none",
    "decode_fill_segment",
    "decode_fund_record",
    "decode_state",
    "delta_document",
    "dumps",
    "encode_dead_letter",
    "encode_delta",
    "encode_fill",
    "encode_fill_segment",
    "encode_fund_record",
    "encode_rejection",
    "encode_states",
    "encode_trigger",
    "event_timestamp",
    "loads",
    "state_document",
    "trigger_document",
]
