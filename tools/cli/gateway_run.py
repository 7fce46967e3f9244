"""`qis gateway run`: receive, verify, store and acknowledge frames from serial ports, an
MQTT broker and a LoRa modem, into one database."""
from __future__ import annotations

import argparse
import faulthandler
import json
import logging
import signal
import sys
from pathlib import Path

from qis.gateway.federation import Settings
from qis.gateway.ingest.lora import LoraOptions
from qis.gateway.ingest.mqtt import MqttOptions
from qis.gateway.service import Gateway

from ..errors import UsageError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--serial", action="append", default=[], metavar="PATH", help="serial port (repeatable)")
    parser.add_argument("--mqtt", metavar="URL", help="broker: mqtt://USER@HOST:PORT or mqtts://... (TLS)")
    parser.add_argument("--mqtt-password-file", type=Path, metavar="FILE", help="the MQTT password (file 0600)")
    parser.add_argument("--mqtt-ca", type=Path, metavar="FILE", help="the clinic CA certificate, for mqtts://")
    parser.add_argument("--lora", metavar="PATH", help="USB-serial LoRa modem (AT commands, RYLR998-class)")
    parser.add_argument("--lora-sf", type=int, default=7, help="LoRa spreading factor, 7..12 (default 7)")
    parser.add_argument("--lora-time-scale", type=float, default=1.0,
                        help="emulation only: the emulated medium runs this many times faster than real time")
    parser.add_argument("--db", required=True, type=Path, help="SQLite database file (created 0600)")
    parser.add_argument("--keys", required=True, type=Path, help="device key directory (0700)")
    parser.add_argument("--baudrate", type=int, default=115200)
    parser.add_argument("--dead-letter-budget", type=float, default=64, metavar="MB",
                        help="disk budget of the dead-letter table; oldest rows go first (default 64)")
    parser.add_argument("--dead-letters-per-device", type=int, default=1000, metavar="N",
                        help="dead letters kept per device; oldest rows go first (default 1000)")
    parser.add_argument("--http", type=int, default=8450, metavar="PORT",
                        help="serve /status, /metrics, /query and /aggregates on 127.0.0.1:PORT (default 8450; 0: any "
                             "free port; -1: off)")
    fed = parser.add_argument_group("federation (without --nats: one clinic, routing and synthesis in process)")
    fed.add_argument("--nats", action="append", metavar="URL", help="a NATS server of the federation (repeatable)")
    fed.add_argument("--site-key", type=Path, help="this site's key file (qis site provision)")
    fed.add_argument("--sites", type=Path, help="the federation's sites file (public keys)")
    defaults = Settings()
    fed.add_argument("--replicas", type=int, default=defaults.replicas, help="owners per shard (default 2)")
    fed.add_argument("--release-k", type=int, default=defaults.k,
                     help="release an aggregate only with at least K outcomes (default 5)")
    fed.add_argument("--release-m", type=int, default=None,
                     help="... from at least M sites (default 2; 1 without --nats)")
    fed.add_argument("--cap", type=int, default=defaults.cap,
                     help="a site weighs at most this many outcomes in an answer (default 20)")
    fed.add_argument("--split-members", type=int, default=defaults.split_members,
                     help="hot shards split into parts (by outcome id) only with at least this many members "
                          f"(default {defaults.split_members})")
    fed.add_argument("--plan-s", type=float, default=defaults.plan_s,
                     help=f"re-plan ownership from the stream's counts every S seconds (default {defaults.plan_s:g})")
    parser.add_argument("--stats-interval", type=float, default=0, help="log counters every S seconds (0: off)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log every dead letter")


def run(args: argparse.Namespace) -> int:
    faulthandler.register(signal.SIGUSR1, file=sys.__stderr__, all_threads=True)  # kill -USR1: the stacks
    logging.basicConfig(level=logging.INFO if args.verbose or args.stats_interval else logging.WARNING,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s", stream=sys.stderr)
    if not (args.serial or args.mqtt or args.lora):
        raise UsageError("give at least one link: --serial PATH, --mqtt URL or --lora PATH")
    mqtt = MqttOptions(args.mqtt, args.mqtt_password_file, args.mqtt_ca) if args.mqtt else None
    lora = LoraOptions(args.lora, sf=args.lora_sf, time_scale=args.lora_time_scale) if args.lora else None
    settings = Settings(replicas=args.replicas, k=args.release_k,
                        m=args.release_m if args.release_m is not None else (2 if args.nats else 1), cap=args.cap,
                        split_members=args.split_members, plan_s=args.plan_s)
    gateway = Gateway(args.keys, args.db, args.serial, args.baudrate, args.dead_letters_per_device,
                      int(args.dead_letter_budget * 1024 * 1024), args.site_key, args.sites, args.nats, settings,
                      None if args.http < 0 else args.http, mqtt=mqtt, lora=lora)
    print(json.dumps(gateway.run(args.stats_interval)), file=sys.stderr)
    return 0
