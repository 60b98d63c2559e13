"""The ``holoport`` command: one subcommand per job, ``--help`` on each."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import time
from pathlib import Path

from holoport import __version__

DEFAULT_HUB = "tcp://127.0.0.1:5555"
DEFAULT_LINK = "tcp://127.0.0.1:5556"


def _size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT such as 640x360, got {text!r}") from None
    if not (16 <= w <= 7680 and 16 <= h <= 4320):
        raise argparse.ArgumentTypeError(f"{w}x{h} is not a sensible image size")
    return w, h


def _positive(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def _port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"a TCP port is 0..65535, got {text}")
    return value


def _codec_option(text: str) -> tuple[str, object]:
    """KEY=VALUE, the value a number where it reads as one."""
    key, sep, value = text.partition("=")
    if not sep or not key.isidentifier():
        raise argparse.ArgumentTypeError(f"a codec option is KEY=VALUE, got {text!r}")
    for kind in (int, float):
        try:
            return key, kind(value)
        except ValueError:
            pass
    return key, value


def _add_codec_options(p: argparse.ArgumentParser, default: str | None, help: str) -> None:
    import codec

    p.add_argument("--codec", default=default, choices=codec.available("cloud"), help=help)
    p.add_argument("--codec-option", type=_codec_option, action="append", default=[], metavar="KEY=VALUE",
                   help="one of the codec's settings over its defaults for a meeting, e.g. "
                   "color_step=1 (octree), compression_level=1 (draco); repeatable")
    p.add_argument("--color-step", type=int, default=None,
                   help="short for --codec-option color_step=N: the octree codec's colour "
                   "quantization step, 1 = lossless (its default 8)")


def _codec_settings(args: argparse.Namespace) -> dict:
    options = dict(args.codec_option)
    if args.color_step is not None:
        options["color_step"] = args.color_step
    return options


def _add_meeting_options(p: argparse.ArgumentParser) -> None:
    _add_codec_options(p, "baseline", "point cloud codec (default baseline)")
    p.add_argument("--fps", type=_positive, default=15.0, help="capture rate (default 15)")
    p.add_argument("--view-size", type=_size, default=(640, 360),
                   help="rendered view, WIDTHxHEIGHT (default 640x360)")


def _print_stats(stats: dict) -> None:
    from rich.table import Table

    from holoport.console import wide_console

    console = wide_console()
    keys = ("members", "received", "forwarded", "stale_replaced", "dropped_full", "dropped_budget",
            "dropped_malformed", "control_dropped", "refused", "timed_out", "joins", "voice_in", "voice_forwarded",
            "voice_dropped", "layer_parts_forwarded", "layer_parts_dropped", "reports_contradicted")
    console.print("hub: " + ", ".join(f"{k.replace('_', ' ')} {stats.get(k, 0)}" for k in keys))
    for room, members in sorted(stats.get("rooms", {}).items()):
        table = Table(title=f"room {room}")
        for col in ("seat", "name", "fps in", "Mbit/s in", "frames out", "stale replaced",
                    "hub p50 ms", "hub p99 ms", "credit wait p99 ms", "voice", "voice hub p99 ms",
                    "layers in", "downlink Mbit/s"):
            table.add_column(col, justify="left" if col == "name" else "right")

        def num(v, fmt=".1f"):
            return "-" if v is None else format(v, fmt)

        for m in sorted(members, key=lambda m: m.get("seat", 0)):
            table.add_row(str(m.get("seat")), str(m.get("name")), num(m.get("fps_in")),
                          num(m.get("mbps_in"), ".2f"), str(m.get("frames_out", 0)),
                          str(m.get("stale_replaced", 0)), num(m.get("hub_p50_ms"), ".2f"),
                          num(m.get("hub_p99_ms"), ".2f"), num(m.get("credit_wait_p99_ms"), ".2f"),
                          ("speaking" if m.get("speaking") else "on") if m.get("voice") else "-",
                          num(m.get("voice_hub_p99_ms"), ".2f"), num(m.get("layers_mean"), ".2f"),
                          num(m.get("downlink_mbps")))
        console.print(table)
    if not stats.get("rooms"):
        console.print("no rooms: nobody has joined" if not stats.get("members") else
                      f"{stats['members']} members in {stats.get('room_count', '?')} rooms, none of them shown "
                      "to us: members see their own room, an admin key (--admin) sees all, and a room's "
                      "token (--room, --token) shows that room")


def _room_token(text: str) -> tuple[str, str]:
    room, sep, token = text.partition("=")
    if not sep or not room or not token:
        raise argparse.ArgumentTypeError(f"expected ROOM=TOKEN, got {text!r}")
    return room, token


def _add_process_options(p: argparse.ArgumentParser, insecure_help: str) -> None:
    p.add_argument("--insecure", action="store_true", help=insecure_help)
    p.add_argument("--quiet", action="store_true", help="log warnings only")


def _add_cluster_options(p: argparse.ArgumentParser, cluster_help: str) -> None:
    """``join`` and ``stats``: the cluster's directory (docs/cluster.md)."""
    p.add_argument("--cluster", default=None, metavar="redis://HOST:PORT", help=cluster_help)
    p.add_argument("--redis-password-file", default=None, metavar="FILE",
                   help="Redis's password (or HOLOPORT_REDIS_PASSWORD; never on the command line)")


def _profiles() -> dict:
    from holoport.link import PROFILES

    return PROFILES


def _link_description() -> str:
    import textwrap

    intro = ("Relay TCP connections to a hub through an emulated link: each direction follows "
             "the profile's capacity (a Lumos5G trace or a synthetic process), delay, jitter, "
             "loss (as retransmission delay: every byte arrives, in order) and handovers. Point "
             "`holoport join --hub` at --listen, or give one participant `holoport join --link "
             "PROFILE`. See docs/link-relay.md.")
    lines = [*textwrap.wrap(intro, 88), "", "profiles:"]
    for name, profile in _profiles().items():
        lines += textwrap.wrap(profile.summary, 88, initial_indent=f"  {name:15} ", subsequent_indent=" " * 18)
    return "\n".join(lines)


def _add_link_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--link", default=None, metavar="PROFILE", choices=list(_profiles()),
                   help="reach the hub through an emulated link (a relay in this process): "
                   + ", ".join(_profiles()) + " (see `holoport link --help`)")
    p.add_argument("--link-trace", default=None, metavar="FILE",
                   help="with --link: the downlink capacity trace (default: the profile's own)")
    p.add_argument("--link-seed", type=int, default=0, metavar="N",
                   help="with --link: seed of the link's randomness (default 0)")
    p.add_argument("--link-fair", action="store_true",
                   help="with --link: fair-queue our connections (voice beside the hologram) as a phone's "
                   "FQ-CoDel does, instead of one FIFO (see `holoport link --fair-queue`)")


def _links(profile_name: str, trace_file: str | None, seed: int):
    """The (profile, uplink, downlink) a relay runs: the given trace, else the profile's
    first Lumos5G trace in the shared data, else (synthetic profiles) its own process."""
    from holoport.link import Trace, get_profile

    profile = get_profile(profile_name)
    trace = None
    if trace_file:
        trace = Trace.load(trace_file)
    elif profile.traces:
        from holoport.data import data_root

        folder = data_root() / "network" / "lumos5g"
        files = profile.trace_files(folder)
        if not files:
            synthetic = ", ".join(n for n, p in _profiles().items() if not p.traces)
            raise FileNotFoundError(
                f"profile {profile.name} replays Lumos5G traces ({profile.traces}) and none are in "
                f"{folder}: pass a trace file (--trace / --link-trace), set HOLOPORT_DATA to the "
                f"shared data folder, or pick a synthetic profile ({synthetic})")
        trace = Trace.load(files[0])
    uplink, downlink = profile.links(trace, seed)
    return profile, uplink, downlink


class _LinkStatus:
    """One line about a relay: bytes and Mbit/s each way since the last line, capacity now,
    lost packets and connections."""

    def __init__(self, relay) -> None:
        self.relay = relay
        self.last = (0.0, 0, 0)  # link time, bytes up, bytes down at the last line

    def line(self, whole_run: bool = False) -> str:
        snap, now = self.relay.snapshot(), self.relay.now()
        last = (0.0, 0, 0) if whole_run else self.last
        self.last = (now, snap["bytes_up"], snap["bytes_down"])
        span = max(now - last[0], 1e-9)
        up = (snap["bytes_up"] - last[1]) * 8 / span / 1e6
        down = (snap["bytes_down"] - last[2]) * 8 / span / 1e6
        return (f"up {snap['bytes_up'] / 1e6:.1f} MB, {up:.2f} Mbit/s (capacity now "
                f"{snap['up_capacity_mbps']:.1f}); down {snap['bytes_down'] / 1e6:.1f} MB, {down:.2f} "
                f"Mbit/s (capacity now {snap['down_capacity_mbps']:.1f}); packets lost and resent "
                f"{snap['lost_up']} up, {snap['lost_down']} down; connections {snap['open']} open, "
                f"{snap['connections']} in all")


SOURCE_HELP = ("where the person comes from: synthetic (default), realsense[:SERIAL] (a live camera), a "
               "Holoport recording (holoport record), an Azure Kinect .mkv, a RealSense .bag/.db3, or a "
               "TUM/Redwood/slambook folder; recordings play with their original "
               "timing, looping; with --cameras, NAME=SOURCE for each camera, comma-separated")
CAMERAS_HELP = "a cameras file from holoport calibrate: places and fuses several cameras into one participant"
CROP_HELP = ("what to keep of what the camera sees: person (the box around a placed participant), cut (depth "
             "range, floor, outliers, largest cluster: for a real camera), none (the whole room); default: "
             "person for synthetic, cut for a Kinect recording, none for an image sequence")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="holoport",
        description="Live holographic conferencing: capture, compress, transmit, composite.",
    )
    parser.add_argument("--version", action="version", version=f"holoport {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("demo", help="a three-person meeting on this machine (no camera, no network)",
                       description="Start a hub and N participant processes on loopback, each "
                       "filming a synthetic person; write every seat's view and print statistics.")
    p.add_argument("--participants", type=int, default=3, help="2..8 (default 3)")
    p.add_argument("--duration", type=_positive, default=10.0, help="seconds (default 10)")
    p.add_argument("--out", default="holoport-demo", help="output folder (default ./holoport-demo)")
    _add_meeting_options(p)

    p = sub.add_parser("hub", help="run a room hub", description="Serve rooms: admit participants, "
                       "forward their frames to everyone else in the room.")
    p.add_argument("--bind", default=DEFAULT_HUB, help=f"endpoint (default {DEFAULT_HUB})")
    p.add_argument("--seats", type=int, default=6, help="seats per room, 2..16 (default 6)")
    p.add_argument("--heartbeat-timeout", type=_positive, default=2.5,
                   help="seconds of silence before a participant is dropped (default 2.5)")
    p.add_argument("--key", default=None, metavar="SECRET",
                   help="the hub's secret key file (NAME.key_secret): encrypt with CURVE")
    p.add_argument("--allow", default=None, metavar="DIR",
                   help="folder of participants' public keys (NAME.key) admitted with --key")
    p.add_argument("--token", action="append", default=[], metavar="ROOM=TOKEN", type=_room_token,
                   help="room ROOM admits only who gives TOKEN (repeat for more rooms)")
    p.add_argument("--admin", default=None, metavar="DIR",
                   help="folder of operators' public keys (NAME.key) that may see every room in "
                        "`holoport stats` (the hub's own key always may)")
    p.add_argument("--max-points", type=int, default=1 << 20,
                   help="points per frame the hub admits and announces; receivers refuse bigger "
                        "frames before decoding them (default 1048576)")
    p.add_argument("--max-members", type=int, default=4000,
                   help="members the hub serves at once, all rooms together (default 4000)")
    p.add_argument("--max-queued-mb", type=_positive, default=1024.0,
                   help="frame bytes the hub may hold or have in flight, all members together (default 1024)")
    g = p.add_argument_group("cluster", "serve rooms together with other hubs (docs/cluster.md)")
    g.add_argument("--cluster", default=None, metavar="redis://HOST:PORT",
                   help="the cluster's Redis: register there, link to the other hubs serving our rooms")
    g.add_argument("--site", default="default", help="this hub's site, e.g. the 5G edge it serves (default: default)")
    g.add_argument("--advertise", default=None, metavar="tcp://HOST:PORT",
                   help="where participants reach this hub (default: --bind, when it names a host)")
    g.add_argument("--cascade-bind", default=None, metavar="ENDPOINT",
                   help="the socket other hubs link to (default: --bind's host, a free port)")
    g.add_argument("--cluster-key", default=None, metavar="SECRET",
                   help="the cluster's secret key file, the same on every hub (`holoport keys cluster`): "
                        "hub-to-hub links are CURVE-encrypted and admit only it")
    g.add_argument("--redis-password-file", default=None, metavar="FILE",
                   help="Redis's password (or HOLOPORT_REDIS_PASSWORD; never on the command line)")
    _add_process_options(p, "allow binding to a non-loopback address without encryption")

    p = sub.add_parser("join", help="take part in a meeting", description="Join a room on a hub "
                       "with a synthetic camera; render the room from your seat.")
    p.add_argument("--hub", default=DEFAULT_HUB, help=f"hub endpoint (default {DEFAULT_HUB})")
    p.add_argument("--room", default="main", help="room name (default main)")
    p.add_argument("--name", default="", help="display name (default: the hub picks one)")
    p.add_argument("--source", default="synthetic", metavar="SOURCE", help=SOURCE_HELP)
    p.add_argument("--cameras", metavar="FILE", help=CAMERAS_HELP)
    p.add_argument("--crop", choices=["person", "cut", "none"], help=CROP_HELP)
    p.add_argument("--body", type=int, default=0, help="which synthetic person (default 0)")
    p.add_argument("--view", action="store_true", help="show the room live in a desktop window (orbit: drag, "
                   "zoom: wheel); needs a display")
    p.add_argument("--web", type=_port, metavar="PORT", help="serve the browser / headset viewer on this port "
                   "(open http://HOST:PORT; WebXR 'Enter VR' where the browser offers it)")
    p.add_argument("--web-host", default="127.0.0.1", help="address the viewer listens on (default 127.0.0.1; "
                   "0.0.0.0 lets a headset on the network in)")
    p.add_argument("--duration", type=float, default=0.0, help="seconds; 0 = until Ctrl-C")
    p.add_argument("--out", default=None, help="folder for the final view, GIF and statistics")
    _add_meeting_options(p)
    p.add_argument("--dump", type=int, default=0, metavar="N",
                   help="also save every N-th frame sent and received (npz, at most 60 each) to --out")
    p.add_argument("--key", default=None, metavar="SECRET",
                   help="our secret key file (NAME.key_secret): encrypt with CURVE")
    p.add_argument("--hub-key", default=None, metavar="PUBLIC",
                   help="the hub's public key file (NAME.key), needed with --key")
    p.add_argument("--token", default=None, help="the room's admission token, if it has one")
    p.add_argument("--mic", metavar="DEVICE|FILE", default=None,
                   help="our voice: a microphone (name or number; default: the system's) or a WAV/FLAC "
                   "file played as one; without a microphone we join and listen")
    p.add_argument("--speaker", metavar="DEVICE|FILE.wav", default=None,
                   help="where the room's voices play, each from its seat: a device (default: the "
                   "system's), a .wav file, or 'file' for seatN.wav in --out. With loudspeakers and a live "
                   "microphone, use headphones: there is no echo cancellation on the desktop (the browser "
                   "page has its own)")
    p.add_argument("--mute", action="store_true", help="listen without sending our voice")
    p.add_argument("--no-voice", action="store_true", help="hologram only: neither speak nor listen")
    p.add_argument("--rate", default="fixed", choices=["fixed", "adaptive", "rungs"],
                   help="adaptive: a layered stream, as many parts as our uplink carries, and each receiver "
                   "gets the parts its own downlink carries in time; rungs: one level of detail and colour step "
                   "for everyone, the lowest any receiver can take (both need --codec octree; see docs/link.md); "
                   "fixed: always --color-step at full detail")
    _add_link_options(p)
    _add_cluster_options(p, "choose a hub of the cluster whose directory is this Redis: the nearest (measured round "
                         "trip), the least loaded of those about as near; when it dies, join the next (--hub is then "
                         "not used; a --hub in a cluster does the same by itself)")
    _add_process_options(p, "allow an unencrypted connection to a hub on another machine")

    p = sub.add_parser("record", help="save a source to a Holoport recording",
                       description="Record a source (the synthetic camera, or another recording) to a "
                       "Holoport recording: RGB-D frames, or with --codec clouds encoded by the project's "
                       "codec. Every frame is on disk as soon as it is captured; a recording cut off "
                       "anywhere plays up to its last complete frame.")
    p.add_argument("out", help="the recording to write (e.g. me.hprec)")
    p.add_argument("--source", default="synthetic", metavar="SOURCE", help=SOURCE_HELP)
    p.add_argument("--cameras", metavar="FILE", help=CAMERAS_HELP)
    p.add_argument("--crop", choices=["person", "cut", "none"], help=CROP_HELP)
    p.add_argument("--body", type=int, default=0, help="which synthetic person (default 0)")
    p.add_argument("--frames", type=int, default=150, help="frames to record (default 150)")
    p.add_argument("--fps", type=_positive, default=15.0, help="capture rate (default 15)")
    p.add_argument("--mic", metavar="DEVICE|FILE|speech", default=None,
                   help="also record sound, stamped on the frames' clock: a microphone (name or number), a "
                   "WAV/FLAC file played as one (looping), a Holoport recording's audio, or 'speech' (the "
                   "synthetic person's own synthetic voice, espeak-ng); without a microphone, video only")
    _add_codec_options(p, None, "store clouds encoded with this codec (each frame stands alone) instead of RGB-D")

    p = sub.add_parser("play", help="replay a Holoport recording",
                       description="Replay a recording as a live source, with its original timing or "
                       "as fast as possible, from any frame; prints what it holds and how fast it plays.")
    p.add_argument("recording")
    p.add_argument("--fast", action="store_true", help="as fast as possible instead of the original timing")
    p.add_argument("--seek", type=int, default=0, metavar="N", help="start at frame N")
    p.add_argument("--frames", type=int, default=0, help="stop after this many frames (0: to the end)")

    p = sub.add_parser("calibrate", help="find each camera's pose from a ChArUco board",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       description="Each camera of one participant films the same ChArUco board once; the "
                       "board's pose in each image (OpenCV's aruco module) places the cameras in one frame, "
                       "ICP on their clouds (--cloud) refines it, and the cameras file that --cameras reads "
                       "is written.\n\nExample (the depth and colour cameras of one Azure Kinect):\n"
                       "  holoport calibrate rig.json --board board_plane.json \\\n"
                       "      --camera depth ir-0.png calib_ir.yml --camera color color-0.jpg calib_color.yml")
    p.add_argument("out", help="the cameras file to write (JSON)")
    p.add_argument("--camera", nargs=3, action="append", required=True, metavar=("NAME", "IMAGE", "INTRINSICS"),
                   help="a camera: its name, its image of the board, its OpenCV intrinsics file (K, dist); "
                   "repeat for each camera")
    p.add_argument("--reference", help="the camera whose frame the others are given in (default: the first)")
    p.add_argument("--board", help="the board as a JSON description (board_plane.json style)")
    p.add_argument("--squares", default="14x9", help="squares across x down, without --board (default 14x9)")
    p.add_argument("--square-mm", type=_positive, default=40.0, help="square side, without --board (default 40)")
    p.add_argument("--marker-mm", type=_positive, default=30.0, help="marker side, without --board (default 30)")
    p.add_argument("--dictionary", default="DICT_5X5_250", help="ArUco dictionary, without --board")
    p.add_argument("--frame", default="reference", choices=["reference", "floor"],
                   help="reference: poses in the reference camera's frame; floor: the board lies on the floor "
                   "and its centre is the participant's origin, y up, facing the reference camera")
    p.add_argument("--cloud", nargs=2, action="append", default=[], metavar=("NAME", "PLY"),
                   help="a camera's cloud (its own coordinates) taken with the image, for ICP refinement")
    p.add_argument("--icp-max-distance", type=_positive, default=0.02, help="ICP pair distance, m (default 0.02)")

    from holoport import viewing

    viewing.add_render_arguments(sub.add_parser("render", help="a meeting or recordings to PNG frames and an MP4",
                                                description=viewing.RENDER_DESCRIPTION,
                                                formatter_class=argparse.RawDescriptionHelpFormatter))
    viewing.add_view_arguments(sub.add_parser("view", help="a meeting or recordings in a desktop window",
                                              description=viewing.VIEW_DESCRIPTION,
                                              formatter_class=argparse.RawDescriptionHelpFormatter))

    p = sub.add_parser("link", help="emulate a 5G link between participants and a hub",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       description=_link_description())
    p.add_argument("--profile", required=True, choices=list(_profiles()), metavar="NAME",
                   help="link profile: " + ", ".join(_profiles()))
    p.add_argument("--listen", default=DEFAULT_LINK, help=f"where participants connect (default {DEFAULT_LINK})")
    p.add_argument("--hub", default=DEFAULT_HUB, help=f"the hub to relay to (default {DEFAULT_HUB})")
    p.add_argument("--trace", default=None, metavar="FILE",
                   help="downlink capacity trace, 'seconds<TAB>Mbit/s' lines (default: the profile's first "
                   "Lumos5G trace in the shared data, or its synthetic capacity)")
    p.add_argument("--seed", type=int, default=0, metavar="N", help="seed for delay, loss, handovers and synthetic "
                   "capacity (default 0)")
    p.add_argument("--duration", type=float, default=0.0, metavar="S", help="seconds; 0 = until Ctrl-C")
    p.add_argument("--every", type=_positive, default=5.0, metavar="S", help="seconds between status lines (default 5)")
    p.add_argument("--fair-queue", action="store_true",
                   help="share each direction between a participant's connections by fair queueing "
                   "(FQ-CoDel's scheduler, as phones run), so voice on its own connection passes a "
                   "hologram's queue; default: one FIFO queue for all (see docs/link-relay.md)")
    _add_process_options(p, "allow a non-loopback --listen or --hub: the relay passes bytes as they are "
                         "and cannot tell whether participants encrypt, so only a CURVE hub or a "
                         "trusted network is safe")

    p = sub.add_parser("stats", help="show a hub's rooms and traffic", description="Ask a hub "
                       "for its counters and, per member, fps and Mbit/s in, frames out, stale "
                       "frames replaced and the time frames spend in the hub (p50/p99).")
    p.add_argument("--hub", default=DEFAULT_HUB, help=f"hub endpoint (default {DEFAULT_HUB})")
    p.add_argument("--key", default=None, metavar="SECRET", help="our secret key file, for a CURVE hub")
    p.add_argument("--hub-key", default=None, metavar="PUBLIC", help="the hub's public key file")
    p.add_argument("--room", default=None, help="a room protected by a token, with --token")
    p.add_argument("--token", default=None, help="that room's token: shows its members")
    p.add_argument("--json", default=None, metavar="PATH", help="also write the statistics as JSON")
    _add_cluster_options(p, "list the cluster's hubs from its directory in this Redis instead: sites, endpoints, "
                         "members, load and rooms (--hub is then not used)")
    _add_process_options(p, "allow an unencrypted connection to a hub on another machine")

    p = sub.add_parser("keys", help="make a CURVE key pair", description="Write NAME.key (the "
                       "public key: give it to the other side) and NAME.key_secret (keep it).")
    p.add_argument("name", help="file name for the pair, e.g. the participant's or hub's name")
    p.add_argument("--dir", default="keys", help="folder to write to (default ./keys)")

    p = sub.add_parser("bench", help="run a benchmark", description="Benchmarks print a table and "
                       "can write JSON records, a Markdown table and a PNG plot.")
    bench = p.add_subparsers(dest="bench", metavar="BENCHMARK", required=True)
    from benchmarks import codec_rd

    codec_rd.add_arguments(bench.add_parser("codec", help="codec rate and speed on PLY frames",
                                            description=codec_rd.__doc__))
    from benchmarks import hub_load

    hub_load.add_arguments(bench.add_parser("hub", help="hub throughput, CPU and latency under load",
                                            description=hub_load.__doc__))
    from benchmarks import cluster_bench, cluster_capacity

    cluster_bench.add_arguments(bench.add_parser("cluster", help="a hub cluster: cascade latency, inter-hub bytes, "
                                                 "re-join after a hub's SIGKILL", description=cluster_bench.__doc__,
                                                 formatter_class=argparse.RawDescriptionHelpFormatter))
    cluster_capacity.add_arguments(bench.add_parser("cluster-capacity", help="hub machines and inter-site traffic "
                                                    "for many rooms, from the cluster bench's figures",
                                                    description=cluster_capacity.__doc__,
                                                    formatter_class=argparse.RawDescriptionHelpFormatter))
    from benchmarks import link_sweep, live_rate

    live_rate.add_arguments(bench.add_parser("live", help="a live sender adapting to a thin uplink",
                                             description=live_rate.__doc__,
                                             formatter_class=argparse.RawDescriptionHelpFormatter))

    link_sweep.add_arguments(bench.add_parser("link", help="the meeting over 5G traces, per rate policy",
                                              description=link_sweep.__doc__,
                                              formatter_class=argparse.RawDescriptionHelpFormatter))
    from benchmarks import capture_rate, render_fps

    render_fps.add_arguments(bench.add_parser("render", help="frames per second of the splat renderer and browser",
                                              description=render_fps.__doc__,
                                              formatter_class=argparse.RawDescriptionHelpFormatter))
    capture_rate.add_arguments(bench.add_parser("capture", help="frames per second of the capture path, by stage",
                                                description=capture_rate.__doc__,
                                                formatter_class=argparse.RawDescriptionHelpFormatter))
    from benchmarks import voice

    voice.add_arguments(bench.add_parser("voice", help="voice: mouth to ear, A/V skew, PESQ/STOI, over 5G links",
                                         description=voice.__doc__,
                                         formatter_class=argparse.RawDescriptionHelpFormatter))
    from benchmarks import fuzz_all, fuzz_recording, fuzz_wire

    for name, module, text in (("fuzz", fuzz_all, "the fuzz campaign: every target, over a million inputs"),
                               ("fuzz-wire", fuzz_wire, "hostile messages against a real hub and a real receiver"),
                               ("fuzz-recording", fuzz_recording, "damaged recordings played end to end")):
        module.add_arguments(bench.add_parser(name, help=text, description=module.__doc__,
                                              formatter_class=argparse.RawDescriptionHelpFormatter))
    return parser


# what to do when a file named on the command line is not there, per command
MISSING_FILE_HINTS = {
    "play": "make a recording with `holoport record FILE`, or check the path",
    "view": "make a recording with `holoport record FILE`, or check the path",
    "render": "make a recording with `holoport record FILE`, or check the path",
    "calibrate": "check the paths of --board, each --camera's image and intrinsics, and --cloud",
    "join": "check the paths of --source, --cameras, --link-trace, --key and --hub-key (`holoport keys NAME` "
            "makes keys)",
    "hub": "check the paths of --key and --allow (`holoport keys NAME` makes keys)",
    "stats": "check the paths of --key and --hub-key (`holoport keys NAME` makes keys)",
    "bench": "check the data paths (--data, --traces, --frames, --source) or set HOLOPORT_DATA",
}


def main(argv: list[str] | None = None) -> int:
    try:
        return _main(argv)
    except KeyboardInterrupt:  # Ctrl-C before a command's own handler was in place
        print("holoport: interrupted", file=sys.stderr)
        return 130


def _main(argv: list[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    logging.basicConfig(level=logging.WARNING if getattr(args, "quiet", False) else logging.INFO,
                        format="%(asctime)s %(name)s %(message)s", datefmt="%H:%M:%S")
    try:
        return _dispatch(args)
    except FileNotFoundError as exc:
        if exc.filename is None:  # raised with our own message, which names the file
            print(f"holoport {args.command}: {exc}", file=sys.stderr)
        else:
            hint = MISSING_FILE_HINTS.get(args.command, "check the path")
            print(f"holoport {args.command}: no such file or folder: {exc.filename}; {hint}", file=sys.stderr)
        return 1
    except (ValueError, RuntimeError, OSError, ImportError, LookupError, EOFError) as exc:
        print(f"holoport {args.command}: {exc}", file=sys.stderr)
        return 1


def _join(args: argparse.Namespace) -> int:
    from holoport.node import JoinError
    from holoport.participant import ParticipantOptions, run_participant
    from holoport.security import node_security

    if args.dump and not args.out:
        raise ValueError("--dump needs --out to know where to write the clouds")
    if (args.link_trace or args.link_seed or args.link_fair) and not args.link:
        raise ValueError("--link-trace, --link-seed and --link-fair go with --link PROFILE")
    if args.link and args.cluster:
        raise ValueError("--link puts a relay in front of one hub: it goes with --hub, not --cluster")
    if args.redis_password_file and not args.cluster:
        raise ValueError("--redis-password-file goes with --cluster redis://HOST:PORT")
    options = ParticipantOptions(
        hub=args.hub, room=args.room, name=args.name, source=args.source, cameras=args.cameras, crop=args.crop,
        body=args.body,
        fps=args.fps,
        duration=args.duration, out=args.out, view_size=args.view_size, dump=args.dump,
        insecure=args.insecure, codec=args.codec, codec_options=_codec_settings(args),
        key=args.key, hub_key=args.hub_key, token=args.token, rate=args.rate, view=args.view, web=args.web,
        web_host=args.web_host, voice=not args.no_voice, mic=args.mic, speaker=args.speaker, mute=args.mute,
        cluster=args.cluster, redis_password_file=args.redis_password_file,
        pick_hub=not args.link)  # a relay emulates the link to --hub: stay on it, cluster or not
    if args.view:
        from render.window import DesktopWindow

        ok, reason = DesktopWindow.available()
        if not ok:  # before joining, as holoport view does
            print(f"holoport join: no display: run on a desktop, use xvfb-run, or use --web / holoport render "
                  f"({reason})", file=sys.stderr)
            return 2
    relay = None
    if args.link:
        from holoport.endpoints import require_loopback
        from holoport.link.relay import LinkRelay

        # the node sees only the loopback relay: make its check against the real hub here
        encrypted = node_security(args.key, args.hub_key) is not None
        require_loopback(args.hub, args.insecure, "hub", encrypted=encrypted)
        profile, uplink, downlink = _links(args.link, args.link_trace, args.link_seed)
        relay = LinkRelay("tcp://127.0.0.1:0", args.hub, uplink, downlink, fair=args.link_fair).start()
        options.hub = relay.endpoint
        if not args.quiet:
            print(f"link {profile.describe()}; capacity from {downlink.trace.name}", flush=True)
    try:
        report = run_participant(options)
    except JoinError as exc:
        message = str(exc)
        if relay is not None:  # speak of the hub the user named, not of our relay
            message = message.replace(f"--bind {relay.endpoint}", f"--bind {args.hub}")
            message = message.replace(relay.endpoint, f"{args.hub} (through the {args.link} link)")
        print(f"holoport join: {message}", file=sys.stderr)
        return 3
    finally:
        if relay is not None:
            relay.stop(grace=1.0)  # our LEAVE is still on the link: let it reach the hub
    if not args.quiet:
        print(f"{report['name']}: sent {report['frames_sent']}, received "
              f"{report['frames_received']} {report['received_by_sender']}")
        rate = report.get("rate")
        if rate and "rungs" in rate:
            print(f"rate: frames per rung {rate['rungs']}, skipped {rate['skipped']}")
        elif rate:
            print(f"rate: layered, frames per parts sent {rate['parts_sent']}, skipped {rate['skipped']}; "
                  f"parts per frame shown, per sender: {report.get('layers_by_sender')}")
        if relay is not None:
            print(f"link: {_LinkStatus(relay).line(whole_run=True)}")
    return 0


def _record(args: argparse.Namespace) -> int:
    """Capture at --fps and write every frame as it comes; with --mic, the microphone's
    blocks between them. Frames are stamped with seconds since ``start``, when the first
    frame was captured (monotonic; a source's first frame can take long); ``epoch`` is
    ``start`` on the wall clock, which a live microphone stamps its blocks on (MicRecorder
    puts them on the frames' base; a file or speech starts at ``epoch``, with the picture)."""
    import time

    import codec
    from capture.audio import AudioDeviceError, MicrophoneSource, SpeechSource, demo_voices, open_microphone
    from capture.recording import MicRecorder, RecordingAudioSource, RecordingWriter, is_recording
    from holoport.point_sources import CODEC_FORMAT, open_points

    if args.frames < 1:
        raise ValueError("--frames must be at least 1")
    if args.cameras and "," in args.source and not args.codec:
        raise ValueError("several cameras fuse into clouds, not one RGB-D image: record them with --codec octree")
    mic = None
    if args.mic is not None:
        try:
            if args.mic == "speech":
                text, voice = demo_voices(args.body + 1)[args.body]
                mic = SpeechSource(text, loop=True, **voice)
            elif is_recording(args.mic):
                mic = RecordingAudioSource(args.mic, loop=True)
            else:
                mic = open_microphone(args.mic)
        except AudioDeviceError as exc:
            print(f"holoport record: no microphone, recording video only: {exc}", file=sys.stderr)
    source = open_points(args.source, args.body, realtime=False, loop=True, cameras=args.cameras,
                         crop=args.crop)
    encoder = codec.for_meeting(args.codec, **_codec_settings(args)) if args.codec else None
    meta = {"source": args.source, "fps": args.fps, "codec": args.codec, "made": time.time(), "crop": source.crop,
            "audio": mic.name if mic is not None else None}
    written, recorder, t, start = 0, None, 0.0, None
    with RecordingWriter(args.out, meta) as writer:
        try:
            for i in range(args.frames):
                if start is not None:
                    time.sleep(max(0.0, start + i / args.fps - time.monotonic()))
                frame = source.read_rgbd()
                if start is None:  # the clock starts with the first frame, however long a source takes to warm up
                    start, epoch = time.monotonic(), time.time()
                t = time.monotonic() - start
                if mic is not None and recorder is None:
                    recorder = MicRecorder(mic, epoch, live=isinstance(mic, MicrophoneSource)).start()
                if encoder is None:
                    if frame is None:
                        raise ValueError(f"{args.source} holds clouds, not RGB-D: record it with --codec")
                    frame.timestamp = t
                    writer.write_rgbd(frame)
                else:
                    positions, colors = source.cut(frame) if frame is not None else source.read()
                    writer.write_cloud(t, encoder.encode(positions, colors), len(positions), CODEC_FORMAT)
                written += 1
                if recorder is not None:
                    recorder.write_to(writer)
        finally:
            if recorder is not None:  # the sound of the last frame's period too
                recorder.stop(writer, until=t + 1 / args.fps)
            elif mic is not None:
                mic.close()
    source.close()
    size = Path(args.out).stat().st_size
    sound = ""
    if recorder is not None:
        sound = f", {recorder.samples / 48_000:.2f} s of sound from {mic.name}"
        if recorder.error is not None:
            print(f"holoport record: the microphone stopped early: {recorder.error}", file=sys.stderr)
    print(f"wrote {written} frames to {args.out} ({size / 1e6:.1f} MB, "
          f"{'RGB-D' if encoder is None else args.codec + ' clouds'}{sound})")
    return 0


def _calibrate(args: argparse.Namespace) -> int:
    from capture.calibration import CharucoBoard, calibrate, load_opencv_intrinsics, rotation_angle_deg

    names = [name for name, _, _ in args.camera]
    if len(set(names)) != len(names):
        raise ValueError(f"camera names must differ, got {names}")
    if args.board:
        board = CharucoBoard.from_json(args.board)
    else:
        try:
            sx, sy = (int(v) for v in args.squares.lower().split("x"))
        except ValueError:
            raise ValueError(f"--squares takes COLUMNSxROWS like 14x9, got {args.squares!r}") from None
        board = CharucoBoard(sx, sy, args.square_mm / 1000, args.marker_mm / 1000, args.dictionary)
    clouds = None
    if args.cloud:
        from capture.ply import read_ply

        clouds = {name: read_ply(Path(path))[0] for name, path in args.cloud}
    rig = calibrate({name: image for name, image, _ in args.camera},
                    {name: load_opencv_intrinsics(k) for name, _, k in args.camera}, board,
                    args.reference or names[0], clouds, frame=args.frame, icp_max_distance=args.icp_max_distance)
    rig.save(args.out)
    for cam in rig.cameras:
        t = cam.pose[:3, 3] * 1000
        icp = f", ICP fitness {cam.icp['fitness']:.2f} RMSE {cam.icp['rmse_m'] * 1000:.1f} mm" if cam.icp else ""
        print(f"{cam.name}: board fit {cam.reprojection_rms_px:.2f} px RMS; pose {cam.name} -> {rig.reference}: "
              f"t = ({t[0]:.1f}, {t[1]:.1f}, {t[2]:.1f}) mm, rotation {rotation_angle_deg(cam.pose[:3, :3]):.2f} deg"
              f"{icp}")
    print(f"wrote {args.out}")
    return 0


def _play(args: argparse.Namespace) -> int:
    import time

    import numpy as np

    from holoport.point_sources import RecordingPoints

    source = RecordingPoints(args.recording, realtime=not args.fast, loop=False)
    rec = source.player.recording
    print(f"{args.recording}: {len(rec)} frames over {rec.timestamps[-1] - rec.timestamps[0]:.2f} s, "
          f"{'indexed' if rec.indexed else 'no intact index (cut off or damaged?): scanned'}; meta {rec.meta}")
    source.player.seek(args.seek)
    points, shown, start = [], set(), time.monotonic()
    while not args.frames or len(points) < args.frames:
        entry = source.player.read()
        if entry is None:
            break
        if entry.index in shown and not args.fast:
            time.sleep(0.002)
            continue
        shown.add(entry.index)
        cloud = source.decode(entry)  # None: a damaged frame, reported and passed over
        if cloud is not None:
            points.append(len(cloud[0]))
    elapsed = time.monotonic() - start
    source.close()
    damage = rec.damage_summary()
    print(f"played {len(points)} frames in {elapsed:.2f} s ({len(points) / max(elapsed, 1e-9):.1f} fps), "
          f"{np.mean(points) if points else 0:,.0f} points per frame{'; ' + damage if damage else ''}")
    return 0 if points else 1


def _link(args: argparse.Namespace) -> int:
    import threading

    from holoport.endpoints import is_loopback
    from holoport.link.relay import parse_tcp

    parse_tcp(args.listen)
    parse_tcp(args.hub)
    # the relay passes bytes as they are and cannot tell whether its clients encrypt, so it
    # cannot make the participants' CURVE-or---insecure check for them: it asks instead
    if not is_loopback(args.listen) and not args.insecure:
        raise ValueError(
            f"{args.listen} is reachable from other machines and the relay forwards whatever "
            f"arrives to the hub {args.hub}: listen on tcp://127.0.0.1:PORT, or pass --insecure "
            f"if the hub encrypts (CURVE) or the network is trusted")
    if not is_loopback(args.hub) and not args.insecure:
        raise ValueError(
            f"the hub {args.hub} is on another machine and participants that reach it through this "
            f"relay believe they talk over loopback, so they will not insist on encryption: make "
            f"sure they join with --key and --hub-key (CURVE), then pass --insecure")
    profile, uplink, downlink = _links(args.profile, args.trace, args.seed)
    log = logging.getLogger("holoport.link")
    print(f"link {profile.describe()}; capacity from {downlink.trace.name}", flush=True)
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        return _relay_until(args, uplink, downlink, stop, log)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _relay_until(args: argparse.Namespace, uplink, downlink, stop, log) -> int:
    """Relay until ``stop`` (a threading.Event the signals set) or the duration ends."""
    import time

    from holoport.link.relay import LinkRelay

    with LinkRelay(args.listen, args.hub, uplink, downlink, fair=args.fair_queue) as relay:
        print(f"relaying {relay.endpoint} -> {args.hub}; connect participants with "
              f"`holoport join --hub {relay.endpoint}`", flush=True)
        status = _LinkStatus(relay)
        end = time.monotonic() + args.duration if args.duration > 0 else float("inf")
        while not stop.is_set() and (left := end - time.monotonic()) > 0:
            if not stop.wait(min(args.every, left)) and time.monotonic() < end:
                log.info("link: %s", status.line())
        print(f"link finished: {status.line(whole_run=True)}", flush=True)
    return 0


def _hub(args: argparse.Namespace) -> int:
    import zmq

    from holoport.endpoints import require_loopback
    from holoport.hub import Hub

    security = None
    if args.key or args.allow:
        from holoport.security import HubSecurity, KeyPair

        if not (args.key and args.allow):
            raise ValueError("encryption needs both --key (the hub's secret) and --allow "
                             "(the folder of participants' public keys)")
        security = HubSecurity(KeyPair.load(args.key), args.allow, admin=args.admin)
    elif args.admin:
        raise ValueError("--admin names keys, which need encryption: pass --key and --allow too")
    require_loopback(args.bind, args.insecure, "hub", encrypted=security is not None)
    cluster = _hub_cluster(args) if args.cluster else None
    if cluster is None and (args.cluster_key or args.cascade_bind or args.advertise):
        raise ValueError("--cluster-key, --cascade-bind and --advertise go with --cluster redis://HOST:PORT")
    registry, config = cluster or (None, None)
    hub = Hub(args.bind, seats=args.seats, heartbeat_timeout=args.heartbeat_timeout,
              security=security, room_tokens=dict(args.token), max_points=args.max_points,
              max_members=args.max_members, max_queued_bytes=int(args.max_queued_mb * 1024 * 1024),
              cluster=config)
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: hub.stop())
    try:
        hub.open()
    except zmq.ZMQError as exc:
        raise RuntimeError(f"cannot listen on {args.bind} (or its cascade socket): {exc}; "
                           "is another hub running there?") from None
    if registry is None:
        hub.run()
        return 0
    from holoport.cluster import ClusterAgent, HubRecord

    record = HubRecord(id=config.hub_no, site=args.site, endpoint=args.advertise or hub.endpoint,
                       cascade=hub.cascade.endpoint, key=security.keys.public.decode() if security else "",
                       seats=args.seats, started=time.time())
    agent = ClusterAgent(registry, record, load=hub.cluster_load)
    config.view = lambda: agent.view
    config.on_rooms = agent.publish_now
    agent.start()
    print(f"hub {config.hub_no} of the cluster at {args.cluster} (site {args.site}): participants at "
          f"{record.endpoint}, hubs at {record.cascade}", flush=True)
    try:
        hub.run()
    finally:
        agent.stop(withdraw=True)
        registry.close()
    return 0


def _hub_cluster(args: argparse.Namespace):
    """The cluster's directory (checked: a hub that cannot reach it does not start) and how
    this hub links to the others."""
    from urllib.parse import urlsplit

    from holoport.cascade import CascadeConfig
    from holoport.cluster import Registry
    from holoport.endpoints import is_loopback
    from holoport.security import KeyPair

    host = urlsplit(args.bind).hostname
    if args.advertise is None and host in (None, "", "*", "0.0.0.0", "::"):
        raise ValueError(f"--bind {args.bind} names no host that others can reach: give --advertise tcp://HOST:PORT")
    if args.advertise is not None and not args.advertise.startswith("tcp://"):
        raise ValueError(f"--advertise must be tcp://HOST:PORT, not {args.advertise!r}")
    keys = KeyPair.load(args.cluster_key) if args.cluster_key else None
    cascade_bind = args.cascade_bind or f"tcp://{host if host not in (None, '', '*') else '0.0.0.0'}:0"
    if keys is None and not args.insecure and not is_loopback(cascade_bind):
        raise ValueError(f"hub-to-hub links on {cascade_bind} would leave this machine unencrypted: give "
                         "--cluster-key (`holoport keys cluster`, the same files on every hub) or --insecure")
    registry = Registry.from_options(args.cluster, args.redis_password_file)
    registry.check()
    advertise_host = urlsplit(args.advertise).hostname if args.advertise else None
    return registry, CascadeConfig(registry.next_hub_id(), cascade_bind, advertise_host, keys)


def _cluster_stats(args: argparse.Namespace) -> int:
    """``holoport stats --cluster``: the directory's live hubs, and each room's members on each."""
    from dataclasses import asdict

    from rich.table import Table

    from holoport.cluster import ClusterError, Registry
    from holoport.console import wide_console

    registry = Registry.from_options(args.cluster, password_file=args.redis_password_file)
    try:
        records = registry.hubs()
    except ClusterError as exc:
        print(f"holoport stats: {exc}", file=sys.stderr)
        return 3
    finally:
        registry.close()
    now = time.time()
    console = wide_console()
    table = Table(title=f"hubs of the cluster at {args.cluster}")
    for col in ("hub", "site", "endpoint", "encrypted", "seats", "members", "Mbit/s", "CPU", "up s", "rooms"):
        table.add_column(col, justify="left" if col in ("site", "endpoint") else "right")
    for r in records:
        table.add_row(str(r.id), r.site, r.endpoint, "yes" if r.key else "no", str(r.seats), str(r.members),
                      f"{r.mbps:.1f}", f"{r.cpu:.2f}", f"{now - r.started:.0f}" if r.started else "-",
                      str(len(r.rooms)))
    console.print(table)
    rooms: dict[str, dict[int, int]] = {}
    for r in records:
        for room, members in r.rooms.items():
            rooms.setdefault(room, {})[r.id] = members
    if rooms:
        table = Table(title="rooms")
        for col in ("room", "members", "hubs (members on each)"):
            table.add_column(col, justify="left" if col != "members" else "right")
        for room, on in sorted(rooms.items()):
            table.add_row(room, str(sum(on.values())), ", ".join(f"{h}: {n}" for h, n in sorted(on.items())))
        console.print(table)
    else:
        console.print("no rooms: nobody has joined" if records else
                      "no live hub in the directory: start one with `holoport hub --cluster`")
    if args.json:
        Path(args.json).write_text(json.dumps({"cluster": args.cluster, "hubs": [asdict(r) for r in records],
                                               "rooms": {room: {str(h): n for h, n in on.items()}
                                                         for room, on in rooms.items()}}, indent=2))
    return 0


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "demo":
        from holoport.demo import run_demo

        reports, interrupted = run_demo(args.participants, args.duration, args.fps, args.out, args.view_size,
                                        codec=args.codec, codec_options=_codec_settings(args))
        if len(reports) == args.participants:
            return 0
        return 130 if interrupted else 1
    if args.command == "hub":
        return _hub(args)
    if args.command == "join":
        return _join(args)
    if args.command == "link":
        return _link(args)
    if args.command == "calibrate":
        return _calibrate(args)
    if args.command == "render":
        from holoport.viewing import run_render

        return run_render(args)
    if args.command == "view":
        from holoport.viewing import run_view

        return run_view(args)
    if args.command == "record":
        return _record(args)
    if args.command == "play":
        return _play(args)
    if args.command == "stats" and args.cluster:
        return _cluster_stats(args)
    if args.command == "stats":
        if args.redis_password_file:
            raise ValueError("--redis-password-file goes with --cluster redis://HOST:PORT")
        from holoport.hubstats import query_stats
        from holoport.node import JoinError
        from holoport.security import node_security

        try:
            stats = query_stats(args.hub, node_security(args.key, args.hub_key), insecure=args.insecure,
                                room=args.room, token=args.token)
        except JoinError as exc:
            print(f"holoport stats: {exc}", file=sys.stderr)
            return 3
        _print_stats(stats)
        if args.json:
            Path(args.json).write_text(json.dumps(stats, indent=2))
        return 0
    if args.command == "keys":
        from holoport.security import create_keys

        public, secret = create_keys(args.dir, args.name)
        print(f"wrote {public} (public: give it to the other side) and {secret} (secret: keep it)")
        return 0
    if args.command == "bench":
        from benchmarks import capture_rate, codec_rd, hub_load, link_sweep, live_rate, render_fps

        if args.bench.startswith("fuzz"):
            from benchmarks import fuzz_all, fuzz_recording, fuzz_wire

            return {"fuzz": fuzz_all, "fuzz-wire": fuzz_wire, "fuzz-recording": fuzz_recording}[args.bench].run(args)
        if args.bench == "voice":
            from benchmarks import voice

            return voice.run(args)
        from benchmarks import cluster_bench, cluster_capacity

        return {"codec": codec_rd, "hub": hub_load, "link": link_sweep, "live": live_rate,
                "capture": capture_rate, "render": render_fps, "cluster": cluster_bench,
                "cluster-capacity": cluster_capacity}[args.bench].run(args)
    raise AssertionError(args.command)
