"""The symbol ordering list of scripts/hot-functions.sh, from callgrind profiles.

Usage: hot-functions.py BINARY DIR [BINARY DIR ...] > hot-functions.txt

Each DIR holds callgrind.share and callgrind.server, profiles of BINARY's
`share` and `server` (callgrind --demangle=no --compress-strings=no). Printed,
one mangled name a line: for each BINARY in turn, the functions only share ran,
then those both ran, then those only the server ran, each name once.
"""

import os
import re
import sys


def ran(binary, profile):
    """The functions of `binary` the profile saw run (every one it lists has cost)."""
    binary = os.path.realpath(binary)
    names, obj = set(), None
    with open(profile, errors="replace") as lines:
        for line in lines:
            if line.startswith("ob="):
                obj = os.path.realpath(line[3:].strip())
            elif line.startswith("fn=") and obj == binary:
                # A recursion's deeper levels are named NAME'2, NAME'3, ...
                names.add(re.sub(r"'\d+$", "", line[3:].strip()))
    return names


def main(args):
    if len(args) < 2 or len(args) % 2:
        sys.exit(__doc__)
    listed = set()
    for binary, folder in zip(args[::2], args[1::2]):
        share = ran(binary, os.path.join(folder, "callgrind.share"))
        server = ran(binary, os.path.join(folder, "callgrind.server"))
        if not share or not server:
            sys.exit("hot-functions: the profiles in %s name no function of %s" % (folder, binary))
        for group in (share - server, share & server, server - share):
            for name in sorted(group - listed):
                print(name)
            listed |= group
        print(
            "%s: share ran %d functions, the server %d, both %d"
            % (binary, len(share), len(server), len(share & server)),
            file=sys.stderr,
        )


if __name__ == "__main__":
    main(sys.argv[1:])
