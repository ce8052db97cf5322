"""Summarise py-spy raw (collapsed) profiles written by ``chat_load.py --profile DIR``.

    python bench/chat_profile.py var/prof/webchat-1000-*.txt [--top 25] [--match chat_service]

py-spy records only busy samples (not idle waits), so samples / (rate x seconds) is roughly the
CPU share.  Prints, over all the given files, the functions with the most samples *inclusive* (on
the stack at all) and *self* (at the top of the stack), as a percentage of all samples.
"""
import argparse
import collections
import re

def load(paths):
    stacks = collections.Counter()
    for path in paths:
        with open(path) as f:
            for line in f:
                stack, _, count = line.rstrip("\n").rpartition(" ")
                if stack and count.isdigit():
                    stacks[stack] += int(count)
    return stacks


def short(frame):
    # "func (path/to/module.py:123)" -> "func (module.py)"
    m = re.match(r"^(.*) \((.*?)(?::\d+)?\)$", frame)
    if not m:
        return frame
    func, path = m.groups()
    parts = path.split("/")
    where = "/".join(parts[-2:]) if "site-packages" in path or "chat_service" in path else parts[-1]
    return f"{func} ({where})"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("files", nargs="+")
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--match", help="only list functions whose name or file contains this")
    args = ap.parse_args(argv)
    stacks = load(args.files)
    busy = sum(stacks.values()) or 1
    incl, self_ = collections.Counter(), collections.Counter()
    for s, c in stacks.items():
        frames = [short(f) for f in s.split(";")]
        self_[frames[-1]] += c
        for f in set(frames):
            incl[f] += c
    print(f"{busy} samples in {len(args.files)} file(s)")
    for title, counter in (("inclusive", incl), ("self", self_)):
        print(f"\n{title}:")
        shown = 0
        for f, c in counter.most_common():
            if args.match and args.match not in f:
                continue
            print(f"  {100 * c / busy:5.1f}%  {f}")
            shown += 1
            if shown >= args.top:
                break


if __name__ == "__main__":
    main()
