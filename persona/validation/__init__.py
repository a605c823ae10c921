"""The validation step every source passes through (``persona data validate DIR``).

Raw tables (``DIR/raw/<table>/``) are checked against :mod:`persona.schemas` and split into
clean rows (``DIR/clean/<table>/``, canonical schema) and refused rows
(``DIR/quarantine/<table>.parquet``, one row per problem with rule, field and reason), with a
report (``DIR/validation_report.json``).

Why DuckDB SQL rather than a dataframe validator such as pandera: the event log reaches 50M+
rows at 1M customers. DuckDB streams Parquet out of core with vectorised SQL, so every rule is
one SQL predicate generated from the schema and the bad-row report is a query, where pandera
would first load each table into pandas memory.
"""

from persona.validation.errors import MissingTableError, SchemaError, ValidationInvariantError
from persona.validation.report import ValidationReport, print_summary
from persona.validation.validate import validate_dataset

__all__ = [
    "MissingTableError",
    "SchemaError",
    "ValidationInvariantError",
    "ValidationReport",
    "print_summary",
    "validate_dataset",
]
