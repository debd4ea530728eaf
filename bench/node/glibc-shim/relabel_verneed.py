"""Relabels a shared object's need of glibc version GLIBC_2.38 as a need of the
oldest glibc version it already needs, once no symbol uses GLIBC_2.38 any more
(`patchelf --clear-symbol-version` for each; libisoc23.so provides them). The dynamic
loader checks every version a library needs, used or not, and patchelf 0.14 cannot
drop one. ELF64 little-endian only (the x86-64 binary of uWebSockets.js).

python3 relabel_verneed.py FILE.node
"""

import struct
import sys

SHT_GNU_VERNEED = 0x6FFFFFFE


def relabel(path, old=b"GLIBC_2.38"):
    data = bytearray(open(path, "rb").read())
    assert data[:4] == b"\x7fELF" and data[4] == 2 and data[5] == 1, "ELF64 little-endian only"
    shoff = struct.unpack_from("<Q", data, 0x28)[0]
    shentsize, shnum = struct.unpack_from("<HH", data, 0x3A)
    sections = [struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * shentsize) for i in range(shnum)]
    changed = 0
    for _name, kind, _flags, _addr, offset, _size, link, info, _align, _entsize in sections:
        if kind != SHT_GNU_VERNEED:
            continue
        strtab = sections[link][4]

        def string(at):
            end = data.index(b"\0", strtab + at)
            return bytes(data[strtab + at : end])

        entry = offset
        for _ in range(info):
            _version, count, _file, aux, next_entry = struct.unpack_from("<HHIII", data, entry)
            auxes = []
            at = entry + aux
            for _ in range(count):
                vhash, vflags, other, name, next_aux = struct.unpack_from("<IHHII", data, at)
                auxes.append((at, vhash, name))
                at += next_aux
            for at, _vhash, name in auxes:
                if string(name) != old:
                    continue
                others = [(h, n) for _a, h, n in auxes if string(n) != old]
                # The oldest version of the same library: always present in glibc.
                h, n = min(others, key=lambda hn: [int(p) for p in string(hn[1]).split(b"_")[1].split(b".")])
                struct.pack_into("<I", data, at, h)
                struct.pack_into("<I", data, at + 8, n)
                changed += 1
            if next_entry == 0:
                break
            entry += next_entry
    open(path, "wb").write(bytes(data))
    return changed


if __name__ == "__main__":
    print(f"{relabel(sys.argv[1])} need(s) of GLIBC_2.38 relabelled in {sys.argv[1]}")
