"""Rewrite CUDA launches for the host emulator (a test tool, see README.md).

    python translate_launches.py OUT_DIR FILE.cu|FILE.cuh ...

Writes a copy of each file into OUT_DIR (X.cu as X.cu.cpp, to be compiled as
C++; X.cuh as X.cuh) in which every launch

    name<<<grid, block[, shmem[, stream]]>>>(args)      (name may be a template-id)

becomes

    ::deepcore_emu::launch("name", grid, block, shmem, stream, [](auto&... a) { name(a...); }, args)

(the generic lambda calls the kernel with the arguments copied at the launch,
so template kernels deduce their template arguments as under nvcc; shmem and stream default to 0, as in CUDA),
and every __shared__ declaration

    __shared__ double a[4][32], b;

becomes static storage that registers itself with the emulator on first use

    static double a[4][32], b; DEEPCORE_EMU_SHARED(a); DEEPCORE_EMU_SHARED(b);

(emu_device.h: the scheduler refills registered shared memory with 0xff
bytes before each block, and the race checker knows it for shared memory; a
section attribute cannot do it, GCC ignores it on the static locals of
templates). The copy starts with a #line
directive naming the original file and keeps every newline, so compiler
messages and sanitizer reports point at the real source. `<<<` inside comments
and string literals is left alone. The sources themselves are never modified.
Files whose translation would not change are rewritten anyway (with #line), so
that their relative includes resolve to the translated neighbours.
"""
import re
import sys
from pathlib import Path


def code_mask(text):
    """mask[i] is True where text[i] is code (not in a comment, string or char literal)."""
    mask = [True] * len(text)
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
        elif text.startswith("/*", i):
            j = text.find("*/", i + 2)
            j = n if j < 0 else j + 2
        elif c in "\"'":
            j = i + 1
            while j < n and text[j] != c:
                j += 2 if text[j] == "\\" else 1
            j += 1
        else:
            i += 1
            continue
        for k in range(i, min(j, n)):
            mask[k] = False
        i = j
    return mask


def match_forward(text, mask, i, open_ch, close_ch):
    """Index just past the bracket that closes text[i] == open_ch."""
    depth = 0
    for j in range(i, len(text)):
        if not mask[j]:
            continue
        if text[j] == open_ch:
            depth += 1
        elif text[j] == close_ch:
            depth -= 1
            if depth == 0:
                return j + 1
    raise ValueError(f"unbalanced {open_ch} at offset {i}")


def split_top_level(s):
    """Split on commas outside (), [], {} (launch configurations hold no template commas here)."""
    parts, depth, cur = [], 0, ""
    for ch in s:
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    parts.append(cur)
    return [p.strip() for p in parts]


IDENT_END = re.compile(r"[A-Za-z_][A-Za-z_0-9:]*$")


def kernel_name_start(text, mask, end):
    """Start of the kernel expression that ends just before `end` (an identifier, maybe qualified, maybe
    followed by template arguments)."""
    j = end
    while j > 0 and text[j - 1].isspace():
        j -= 1
    if text[j - 1] == ">":  # template arguments: walk back to the matching '<'
        depth = 0
        k = j - 1
        while k >= 0:
            if mask[k] and text[k] == ">":
                depth += 1
            elif mask[k] and text[k] == "<":
                depth -= 1
                if depth == 0:
                    break
            k -= 1
        j = k
    m = IDENT_END.search(text[:j])
    if not m:
        raise ValueError(f"no kernel name before the launch at offset {end}")
    return m.start()


SHARED_FIRST = re.compile(r"^(?P<type>.*?)\b(?P<name>[A-Za-z_]\w*)\s*(?P<dims>(?:\[[^\]]*\]\s*)*)$", re.S)
SHARED_NEXT = re.compile(r"^(?P<name>[A-Za-z_]\w*)\s*(?P<dims>(?:\[[^\]]*\]\s*)*)$", re.S)


def translate_shared(text):
    """Rewrite each `__shared__ T a[..], b;` as static storage registered with the emulator."""
    mask = code_mask(text)
    out, pos, count = [], 0, 0
    for m in re.finditer(r"\b__shared__\b", text):
        i = m.start()
        if not mask[i]:
            continue
        if re.search(r"\bextern\s*$", text[max(0, i - 16):i]):
            raise ValueError(f"extern __shared__ (dynamic shared memory) at offset {i} is not emulated")
        # `static __shared__` or `__shared__ static`: in code, not in a comment before it.
        code_before = "".join(c if mask[k] else " " for k, c in enumerate(text[max(0, i - 64):i], max(0, i - 64)))
        static_before = re.search(r"\bstatic\s*$", code_before) is not None
        end = next((j for j in range(m.end(), len(text)) if mask[j] and text[j] == ";"), -1)
        if end < 0:
            raise ValueError(f"__shared__ declaration at offset {i} without ';'")
        decls = split_top_level(text[m.end():end])
        if any("=" in d or "(" in d or "/" in d or "#" in d for d in decls):
            raise ValueError(f"__shared__ declaration with an initializer, attribute, parenthesis, comment or "
                             f"preprocessor line (not translated; write it plainly) at offset {i}: {text[i:end]}")
        first = SHARED_FIRST.match(decls[0])
        if not first or not first.group("type").strip():
            raise ValueError(f"cannot read the __shared__ declaration at offset {i}: {text[i:end]}")
        names = [first.group("name")]
        for d in decls[1:]:
            nxt = SHARED_NEXT.match(d)
            if not nxt:
                raise ValueError(f"cannot read the __shared__ declarator {d!r} at offset {i}")
            names.append(nxt.group("name"))
        out.append(text[pos:i])
        static_after = re.match(r"\s*static\b", text[m.end():end]) is not None
        out.append(("" if static_before or static_after else "static") + text[m.end():end + 1] +
                   "".join(f" DEEPCORE_EMU_SHARED({n});" for n in names))
        pos = end + 1
        count += 1
    out.append(text[pos:])
    return "".join(out), count


def translate(text):
    text, _ = translate_shared(text)
    mask = code_mask(text)
    out, pos, count = [], 0, 0
    for m in re.finditer(r"<<<", text):
        i = m.start()
        if not mask[i] or i < pos:
            continue
        start = kernel_name_start(text, mask, i)
        name = text[start:i].strip()
        close = text.find(">>>", i + 3)
        if close < 0:
            raise ValueError(f"launch of {name} without >>>")
        config = split_top_level(text[i + 3:close])
        if not 2 <= len(config) <= 4:
            raise ValueError(f"launch of {name}: expected 2 to 4 configuration values, got {config}")
        config += ["0"] * (4 - len(config))
        p = close + 3
        while text[p].isspace():
            p += 1
        if text[p] != "(":
            raise ValueError(f"launch of {name}: expected '(' after >>>")
        args_end = match_forward(text, mask, p, "(", ")")
        args = text[p + 1:args_end - 1]
        sep = ", " if args.strip() else ""
        # Newlines inside the launch are kept so that line numbers stay those of the source.
        gap = text[i + 3:close].count("\n") + text[close:p].count("\n")
        out.append(text[pos:start])
        out.append(f'::deepcore_emu::launch("{name}", {", ".join(config)}, [](auto&... a) {{ {name}(a...); }}'
                   f'{sep}{args}' + "\n" * gap + ")")
        pos = args_end
        count += 1
    out.append(text[pos:])
    return "".join(out), count


def main(argv):
    if len(argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    out_dir = Path(argv[1])
    out_dir.mkdir(parents=True, exist_ok=True)
    for f in map(Path, argv[2:]):
        text = f.read_text()
        new, _ = translate(text)
        path = str(f.resolve()).replace("\\", "\\\\").replace('"', '\\"')
        target = out_dir / (f.name + ".cpp" if f.suffix == ".cu" else f.name)  # .cu compiled as C++
        content = f'#line 1 "{path}"\n' + new
        if not target.exists() or target.read_text() != content:
            target.write_text(content)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
