"""The bounds of the rule language's input (docs/rules.md, "Limits").

Each is far beyond what an operator writes by hand (1,000 rules of the usual kind are 100 KB of
text, 20,000 tokens), and together they keep the compiler's memory and recursion bounded on a
gateway with 1 GB of RAM: the text is lexed as a stream and parsed one statement at a time, so
the largest parse tree is that of one statement; the AST, the checker, the code generator and
Python's own compiler never see an expression deeper than MAX_NESTING or larger than
MAX_OPERATIONS.
"""

from __future__ import annotations

MAX_FILE_BYTES = 1 << 20
"""Bytes of one rule file."""
MAX_TOTAL_BYTES = 4 << 20
"""Bytes of all the rule files of a set together."""
MAX_STATEMENTS = 10_000
"""Rules and LETs of a set, all files together."""
MAX_STATEMENT_TOKENS = 20_000
"""Tokens (names, numbers, strings, operators, punctuation) of one rule or LET."""
MAX_TOKENS = 500_000
"""Tokens of all the rule files of a set together."""
MAX_STRING = 4096
"""Characters of one string literal, as written between its quotes."""
MAX_WORD = 255
"""Characters of a name or a number."""
MAX_NESTING = 32
"""Levels of nesting in one expression: parentheses, function calls, NOT and unary minus, and
each level of operators (`a + b * c` is two levels; `a + b + c` one)."""
MAX_OPERATIONS = 1000
"""Operators and function calls in one expression (a sum of 1,000 terms has 999)."""


def size(n: int) -> str:
    """`1 MiB`, `4 MiB`, `512 KiB`, `300 bytes`: for messages."""
    for unit, shift in (("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift and n % (1 << shift) == 0:
            return f"{n >> shift} {unit}"
    if n >= 1 << 20:
        return f"{n / (1 << 20):.1f} MiB"
    if n >= 1 << 10:
        return f"{n / (1 << 10):.1f} KiB"
    return f"{n} bytes"
