"""python -m picogate.simboard DIR [--install] [--uid HEX] [--board NAME] [--heapsize SIZE]: run one
simulated board in the foreground, print its serial port, stop on Ctrl-C."""

from __future__ import annotations

import argparse
import signal
import sys
import threading

from picogate.simboard._board import SimBoard, SimBoardError, install_firmware


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m picogate.simboard", description=__doc__)
    ap.add_argument("dir", help="board directory (its flash filesystem)")
    ap.add_argument("--install", action="store_true", help="copy the firmware sources into DIR first")
    ap.add_argument("--uid", default="E6614103E7000001")
    ap.add_argument("--board", default="pico")
    ap.add_argument("--heapsize", default="220wK")
    ap.add_argument("--port", default=None, help="path of the serial port symlink to create")
    args = ap.parse_args(argv)
    try:
        if args.install:
            install_firmware(args.dir)
        board = SimBoard(args.dir, uid=args.uid, board=args.board, heapsize=args.heapsize, port=args.port)
        board.start()
    except (SimBoardError, OSError) as e:
        print(f"simboard: {e}", file=sys.stderr)
        return 2
    print(board.port, flush=True)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    try:
        done.wait()
    except KeyboardInterrupt:
        pass
    finally:
        board.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
