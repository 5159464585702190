"""The grammar of the rule language (lark, LALR, positions kept).  Keywords are case-insensitive.

STRING is written as an unrolled loop without a repeated group: Python's `re` keeps a backtracking
record for every repetition of a group, which made `"([^"\\]|\\.)*"` take 900 MB to match a
1 MB literal; this form matches in constant memory."""

from __future__ import annotations

KEYWORDS = ("rule", "end", "on", "for", "clear", "then", "else", "every", "let", "unit", "and", "or", "not")

GRAMMAR = r"""
start: _stmt*
_stmt: rule_block | on_rule | every_rule | let_stmt

rule_block: RULE NAME clause+ END
clause: ON expr          -> c_on
      | FOR duration     -> c_for
      | CLEAR expr       -> c_clear
      | THEN actions     -> c_then
      | ELSE actions     -> c_else
      | EVERY duration   -> c_every

on_rule: ON expr for_part? clear_part? THEN actions else_part?
for_part: FOR duration
clear_part: CLEAR expr
else_part: ELSE actions
every_rule: EVERY duration THEN actions
let_stmt: LET ref ASSIGN expr unit_part?
unit_part: UNIT STRING

actions: call (SEMI | call)*

?expr: or_expr
?or_expr: and_expr (OR and_expr)*
?and_expr: not_expr (AND not_expr)*
?not_expr: NOT not_expr -> not_
         | comparison
?comparison: sum (COMP sum)?
?sum: product ((PLUS | MINUS) product)*
?product: unary ((STAR | SLASH | PERCENT) unary)*
?unary: MINUS unary -> neg
      | atom
?atom: NUMBER -> number
     | duration
     | TRUE -> true
     | FALSE -> false
     | STRING -> string
     | ref
     | call
     | NAME -> name
     | LPAR expr RPAR
ref: NAME DOT _pname
_pname: NAME | RULE | END | ON | FOR | CLEAR | THEN | ELSE | EVERY | LET | UNIT | AND | OR | NOT | TRUE | FALSE
call: NAME LPAR [arg (COMMA arg)*] RPAR
?arg: expr
    | NAME ASSIGN expr -> kwarg
duration: DURATION | BAD_DURATION

RULE.5: /rule\b/i
END.5: /end\b/i
ON.5: /on\b/i
FOR.5: /for\b/i
CLEAR.5: /clear\b/i
THEN.5: /then\b/i
ELSE.5: /else\b/i
EVERY.5: /every\b/i
LET.5: /let\b/i
UNIT.5: /unit\b/i
AND.5: /and\b|&&/i
OR.5: /or\b|\|\|/i
NOT.5: /not\b|!(?!=)/i
TRUE.5: /true\b/i
FALSE.5: /false\b/i

DURATION.4: /\d+(\.\d+)?(ms|s|m|h|d)(?![A-Za-z0-9_])/i
NUMBER.3: /\d+(\.\d+)?([eE][+-]?\d+)?(?![A-Za-z0-9_.])/
BAD_DURATION.2: /\d+(\.\d+)?[A-Za-z_][A-Za-z0-9_]*/
NAME: /[A-Za-z_][A-Za-z0-9_]*/
STRING: /"[^"\\\n]*(?:\\.[^"\\\n]*)*"|'[^'\\\n]*(?:\\.[^'\\\n]*)*'/
COMP: "==" | "!=" | "<=" | ">=" | "<" | ">" | "<>"
ASSIGN: "="
PLUS: "+"
MINUS: "-"
STAR: "*"
SLASH: "/"
PERCENT: "%"
LPAR: "("
RPAR: ")"
COMMA: ","
SEMI: ";"
DOT: "."

COMMENT: /#[^\n]*/
%import common.WS
%ignore WS
%ignore COMMENT
"""

FRIENDLY = {
    "NAME": "a name",
    "NUMBER": "a number",
    "DURATION": "a duration (500ms, 10s, 5m, 1h)",
    "STRING": "a string",
    "COMP": "a comparison",
    "ASSIGN": "'='",
    "PLUS": "'+'",
    "MINUS": "'-'",
    "STAR": "'*'",
    "SLASH": "'/'",
    "PERCENT": "'%'",
    "LPAR": "'('",
    "RPAR": "')'",
    "COMMA": "','",
    "SEMI": "';'",
    "DOT": "'.'",
    "$END": "the end of the file",
    **{k.upper(): k.upper() for k in KEYWORDS},
    "TRUE": "true",
    "FALSE": "false",
}
