"""Parse `nvdisasm -c -gi` output into instructions with their source locations.

Each instruction carries its address, guard predicate, opcode (with modifiers),
operand text, branch target (for BRA and friends) and the inline chain of
source locations nvdisasm printed before it (innermost first). nvdisasm prints
a location only when it changes, so a location holds until the next one.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

_LOCATION = re.compile(r'^\s*//## File "(?P<file>[^"]+)", line (?P<line>\d+)'
                       r'(?: inlined at "(?P<at_file>[^"]+)", line (?P<at_line>\d+))?')
_INSTRUCTION = re.compile(r'^\s*/\*(?P<addr>[0-9a-f]+)\*/\s+(?P<body>.*?)\s*;?\s*$')
_LABEL = re.compile(r'^\s*(?P<label>\.L_x_\d+|\.L_\w+):\s*$')
_TARGET = re.compile(r'`\((?P<label>[^)]+)\)')
_FUNCTION = re.compile(r'^\s*\.type\s+(?P<name>[^,\s]+),@function')

BRANCHES = ("BRA", "BRX", "JMP", "JMX", "CALL", "RET", "EXIT", "BREAK", "CONT")


@dataclass(frozen=True)
class Location:
    file: str
    line: int


@dataclass
class Instruction:
    addr: int
    predicate: str  # "" or e.g. "@!P0"
    opcode: str  # with modifiers, e.g. "FSETP.GE.AND"
    operands: str
    target: int | None  # branch target address
    chain: tuple[Location, ...]  # source locations, innermost first

    @property
    def base(self) -> str:
        """Opcode without modifiers: "FSETP"."""
        return self.opcode.split(".")[0]

    @property
    def is_branch(self) -> bool:
        return self.base in BRANCHES


def parse(text: str) -> list[Instruction]:
    """Instructions of the first function in the listing (the kernel), in address order; the
    subroutines ptxas places after it (libdevice slow paths reached by CALL) are not part of it."""
    raw, labels = [], {}
    chain: list[Location] = []
    building: list[Location] = []
    pending_label = []
    functions = 0
    for line in text.splitlines():
        if _FUNCTION.match(line):
            functions += 1
            if functions > 1:
                break
            continue
        m = _LOCATION.match(line)
        if m:
            building.append(Location(m["file"], int(m["line"])))
            if m["at_file"] is None:  # the outermost location ends a chain
                chain, building = building, []
            continue
        m = _LABEL.match(line)
        if m:
            pending_label.append(m["label"])
            continue
        m = _INSTRUCTION.match(line)
        if not m:
            continue
        addr = int(m["addr"], 16)
        for label in pending_label:
            labels[label] = addr
        pending_label = []
        raw.append((addr, m["body"], tuple(chain)))
    return [_instruction(addr, body, chain, labels) for addr, body, chain in raw]


def _instruction(addr: int, body: str, chain, labels: dict) -> Instruction:
    body = body.rstrip(" ;")
    predicate = ""
    if body.startswith("@"):
        predicate, body = body.split(None, 1)
    opcode, _, operands = body.partition(" ")
    m = _TARGET.search(operands)
    target = labels.get(m["label"]) if m else None
    return Instruction(addr, predicate, opcode, operands.strip(), target, chain)
