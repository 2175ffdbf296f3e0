"""The ``everstream`` command: topics, produce, consume, log checks and the demo."""

from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import pyarrow as pa
import typer
from rich.console import Console
from rich.table import Table

from everstream.errors import ConfigError, EverstreamError
from everstream.log.contract import (
    HEADERS_COL,
    KEY_COL,
    META_COLUMNS,
    OFFSET_COL,
    PARTITION_COL,
    TIMESTAMP_COL,
    Log,
    TopicSpec,
)
from everstream.log.open import open_log

app = typer.Typer(
    name="everstream",
    help="everstream: durable streams, stream processing and analytics for financial services.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
topics_app = typer.Typer(help="Create, list, describe and delete topics.", no_args_is_help=True)
log_app = typer.Typer(help="Check and maintain the embedded log's storage.", no_args_is_help=True)
app.add_typer(topics_app, name="topics")
app.add_typer(log_app, name="log")


from everstream.bench.cli import bench_app  # noqa: E402 - light module: heavy imports are inside its commands

app.add_typer(bench_app, name="bench")

err = Console(stderr=True, soft_wrap=True)


class _Options:
    data_dir: Path | None = None
    broker: str | None = None


OPTS = _Options()

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$")
_UNITS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}


def parse_duration_ms(text: str) -> int:
    """'7d', '12h', '30m', '10s', '250ms' (a bare number is seconds) -> milliseconds."""
    m = _DURATION.match(text)
    if not m:
        raise ConfigError(f"invalid duration {text!r}: use a number with ms, s, m, h, d or w (e.g. 7d)")
    return int(float(m.group(1)) * _UNITS[m.group(2) or "s"])


def parse_size(text: str) -> int:
    m = re.match(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?i?b?)?\s*$", text, re.I)
    if not m:
        raise ConfigError(f"invalid size {text!r}: use e.g. 500MB, 2GiB, 1048576")
    unit = (m.group(2) or "").lower().rstrip("b").rstrip("i")
    mult = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}[unit]
    return int(float(m.group(1)) * mult)


def _log() -> Log:
    return open_log(OPTS.broker, OPTS.data_dir)


@app.callback()
def _global(
    data_dir: Annotated[
        Path | None,
        typer.Option(
            "--data-dir", envvar="EVERSTREAM_DATA", help="Embedded log directory [default: ./everstream-data]"
        ),
    ] = None,
    broker: Annotated[
        str | None,
        typer.Option("--broker", envvar="EVERSTREAM_BROKER", help="'embedded' (default) or kafka://host:port"),
    ] = None,
) -> None:
    OPTS.data_dir = data_dir
    OPTS.broker = broker


# ---------------------------------------------------------------------- topics


@topics_app.command("create")
def topics_create(
    name: str,
    partitions: Annotated[int, typer.Option("--partitions", "-p", help="Number of partitions")] = 1,
    compact: Annotated[bool, typer.Option("--compact", help="Keep only the latest record per key")] = False,
    retention: Annotated[str | None, typer.Option(help="Delete data older than this, e.g. 7d")] = None,
    retention_bytes: Annotated[str | None, typer.Option(help="Keep at most this much per partition, e.g. 1GiB")] = None,
    compression: Annotated[str, typer.Option(help="lz4 (default), zstd or none")] = "lz4",
    if_missing: Annotated[bool, typer.Option("--if-missing", help="No error if it exists")] = False,
    replication_factor: Annotated[int | None, typer.Option(
        "--replication-factor", help="Kafka only: copies of each partition [default: min(3, brokers)]"
    )] = None,
) -> None:
    """Create a topic."""
    spec = TopicSpec(
        name, partitions, compact,
        parse_duration_ms(retention) if retention else None,
        parse_size(retention_bytes) if retention_bytes else None,
        compression=compression,  # type: ignore[arg-type]
    )
    with _log() as log:
        if replication_factor is not None:
            from everstream.log.kafka import KafkaLog

            if not isinstance(log, KafkaLog):
                raise ConfigError("--replication-factor applies to Kafka topics (--broker kafka://host:port)")
            info = log.create_topic(spec, exist_ok=if_missing, replication_factor=replication_factor)
        else:
            info = log.create_topic(spec, exist_ok=if_missing)
    err.print(f"topic [bold]{info.name}[/] with {info.spec.partitions} partition(s)")


@topics_app.command("list")
def topics_list(as_json: Annotated[bool, typer.Option("--json", help="JSON output")] = False) -> None:
    """List topics."""
    with _log() as log:
        infos = log.list_topics()
    if as_json:
        print(json.dumps([i.to_json() for i in infos]))
        return
    table = Table("topic", "partitions", "records", "bytes", "compact", "retention")
    for i in infos:
        j = i.to_json()
        table.add_row(i.name, str(j["partitions"]), f"{j['records']:,}", f"{j['bytes']:,}",
                      "yes" if j["compact"] else "", _retention_text(j))
    Console().print(table)


def _retention_text(j: dict[str, Any]) -> str:
    parts = []
    if j["retention_ms"]:
        parts.append(f"{j['retention_ms'] / 86_400_000:g}d")
    if j["retention_bytes"]:
        parts.append(f"{j['retention_bytes']:,} B")
    return ", ".join(parts)


@topics_app.command("describe")
def topics_describe(name: str, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Show a topic's configuration and per-partition offsets."""
    with _log() as log:
        info = log.describe_topic(name)
    j = info.to_json()
    if as_json:
        print(json.dumps(j))
        return
    c = Console()
    c.print(f"[bold]{name}[/]  partitions={j['partitions']} compact={j['compact']} "
            f"compression={j['compression']} retention={_retention_text(j) or 'forever'}")
    if j["schema"]:
        c.print("schema: " + ", ".join(f"{k}: {v}" for k, v in j["schema"].items()))
    t = Table("partition", "start offset", "end offset", "records", "bytes")
    for p in j["partition_offsets"]:
        t.add_row(str(p["partition"]), str(p["start"]), str(p["end"]), f"{p['end'] - p['start']:,}", f"{p['bytes']:,}")
    c.print(t)


@topics_app.command("delete")
def topics_delete(name: str) -> None:
    """Delete a topic and everything in it."""
    with _log() as log:
        log.delete_topic(name)
    err.print(f"deleted topic {name}")


# ---------------------------------------------------------------------- produce / consume


@app.command()
def produce(
    topic: str,
    source: Annotated[str, typer.Argument(help="Input file, or - for stdin")] = "-",
    fmt: Annotated[str, typer.Option("--format", "-f", help="jsonl, csv or parquet")] = "jsonl",
    key: Annotated[str | None, typer.Option(help="Field to use as the record key")] = None,
    time_field: Annotated[str | None, typer.Option("--time", help="Field holding the event time")] = None,
    partitions: Annotated[int, typer.Option(help="Partitions if the topic is created")] = 1,
    max_record_bytes: Annotated[int, typer.Option(help="Larger records go to the dead-letter topic")] = 1 << 20,
) -> None:
    """Write records from a file into TOPIC; bad lines go to TOPIC.dlq. Returns when durable."""
    import numpy as np

    from everstream.connectors.files import read_file, timestamps_ms
    from everstream.log.records import DeadLetter

    if fmt not in ("jsonl", "csv", "parquet"):
        raise ConfigError(f"unknown format {fmt!r}: use jsonl, csv or parquet")
    produced = dead = 0
    with _log() as log:
        info = log.create_topic(TopicSpec(topic, partitions), exist_ok=True)
        schema = info.spec.schema
        with log.producer(max_record_bytes=max_record_bytes) as producer:
            for chunk in read_file(source, fmt, topic, schema, max_record_bytes):  # type: ignore[arg-type]
                letters = list(chunk.dead)
                table = chunk.table
                if table.num_rows:
                    for field in (key, time_field):
                        if field and field not in table.column_names:
                            raise ConfigError(
                                f"--key/--time field {field!r} is not in the input ({table.column_names})"
                            )
                    ms = None
                    if time_field:
                        ms = timestamps_ms(table.column(time_field))
                        bad = np.asarray(ms.is_null())
                        if bad.any():
                            for i in np.flatnonzero(bad):
                                row = table.slice(int(i), 1).to_pylist()[0]
                                letters.append(DeadLetter(
                                    topic, f"--time field {time_field!r}: {row.get(time_field)!r} is not a time",
                                    json.dumps(row, default=str).encode(), source_line=int(chunk.lines[i])))
                            keep = pa.array(~bad)
                            table, ms = table.filter(keep), ms.filter(keep)
                    produced += producer.send_batch(topic, table, key=key, timestamp=ms)
                if letters:
                    producer.send_dead_letters(topic, letters)
            producer.flush()
            dead = producer.dead_letters
    print(json.dumps({"topic": topic, "produced": produced, "dead_letters": dead}))
    if dead:
        err.print(f"{dead} record(s) went to {topic}.dlq: everstream consume {topic}.dlq --from-beginning")


@app.command()
def consume(
    topic: str,
    group: Annotated[str | None, typer.Option(help="Consumer group (commits offsets)")] = None,
    from_beginning: Annotated[bool, typer.Option("--from-beginning", help="Start at the earliest offset")] = False,
    max_records: Annotated[int | None, typer.Option("--max", help="Exit after this many records")] = None,
    idle_timeout: Annotated[float | None, typer.Option(help="Exit after this many seconds without data")] = None,
    fmt: Annotated[str, typer.Option("--format", "-f", help="jsonl or csv")] = "jsonl",
    meta: Annotated[bool, typer.Option("--meta", help="Add _partition, _offset, _timestamp, _key")] = False,
) -> None:
    """Print records of TOPIC as JSON lines (or CSV) on stdout."""
    from everstream.connectors.files import to_json_lines

    if fmt not in ("jsonl", "csv"):
        raise ConfigError(f"unknown output format {fmt!r}: use jsonl or csv")
    out = sys.stdout.buffer
    seen = 0
    header_done = False
    with _log() as log:
        info = log.describe_topic(topic)
        consumer = log.consumer(group, start="earliest" if from_beginning else "latest")
        try:
            if group:
                consumer.subscribe([topic])
            else:
                consumer.assign([(topic, p) for p in range(info.spec.partitions)])
            last_data = time.monotonic()
            while max_records is None or seen < max_records:
                want = None if max_records is None else max_records - seen
                batches = consumer.poll(0.2, max_records=want)
                if not batches:
                    if idle_timeout is not None and time.monotonic() - last_data >= idle_timeout:
                        break
                    continue
                last_data = time.monotonic()
                for b in batches:
                    b = _output_columns(b, meta)
                    if fmt == "jsonl":
                        out.write(to_json_lines(b))
                    else:
                        import pyarrow.csv as pacsv

                        sink = pa.BufferOutputStream()
                        pacsv.write_csv(b, sink, pacsv.WriteOptions(include_header=not header_done))
                        header_done = True
                        out.write(sink.getvalue().to_pybytes())
                    seen += b.num_rows
                out.flush()
                if group:
                    consumer.commit()
        except BrokenPipeError:
            pass
        finally:
            consumer.close()
    err.print(f"consumed {seen} record(s) from {topic}")


def _output_columns(b: pa.RecordBatch, meta: bool) -> pa.RecordBatch:
    keep = [n for n in b.schema.names if n not in META_COLUMNS]
    if meta:
        keep += [n for n in (PARTITION_COL, OFFSET_COL, TIMESTAMP_COL, KEY_COL, HEADERS_COL) if n in b.schema.names]
    b = b.select(keep)
    if meta:
        i = b.schema.get_field_index(TIMESTAMP_COL)
        b = b.set_column(i, TIMESTAMP_COL, b.column(i).cast(pa.int64()))
    return b


# ---------------------------------------------------------------------- log maintenance


@log_app.command("check")
def log_check(
    repair: Annotated[bool, typer.Option("--repair", help="Delete damaged batches (their records are lost)")] = False,
) -> None:
    """Verify every stored batch (checksums, decoding, offsets) and the database structure."""
    from everstream.log.embedded import EmbeddedLog

    log = _log()
    if not isinstance(log, EmbeddedLog):
        raise ConfigError(
            "log check applies to the embedded log only: a Kafka broker verifies its own segments (CRCs) and "
            "replicas; use Kafka's tools (kafka-dump-log.sh, kafka-log-dirs.sh) there"
        )
    with log:
        checked, damage = log.check(repair=repair)
    for d in damage:
        err.print(f"[red]damaged[/] {d}")
    print(json.dumps({"batches_checked": checked, "damaged": len(damage), "repaired": repair and bool(damage)}))
    if damage and not repair:
        err.print("run `everstream log check --repair` to drop damaged batches, or restore from a backup")
        raise typer.Exit(1)


@log_app.command("maintain")
def log_maintain() -> None:
    """Apply retention and compaction now."""
    from everstream.log.embedded import EmbeddedLog

    log = _log()
    if not isinstance(log, EmbeddedLog):
        raise ConfigError(
            "log maintain applies to the embedded log only: on Kafka the broker applies retention and "
            "compaction itself (topic configs retention.ms, retention.bytes, cleanup.policy)"
        )
    with log:
        print(json.dumps(log.maintain()))


# ---------------------------------------------------------------------- run


@app.command()
def run(
    pipeline: Annotated[Path, typer.Argument(help="Python file that defines `app = es.App(...)`")],
    until_idle: Annotated[
        bool, typer.Option("--until-idle", help="Stop once the inputs are drained and every window has fired")
    ] = False,
    duration: Annotated[float | None, typer.Option(help="Stop after this many seconds")] = None,
    app_name: Annotated[str | None, typer.Option("--app", help="Name of the App variable (default: app)")] = None,
    metrics: Annotated[bool, typer.Option("--metrics", help="Add per-step metrics to the JSON summary")] = False,
) -> None:
    """Run the stream-processing app defined in PIPELINE (Ctrl-C stops it cleanly)."""
    from everstream.engine.loader import load_app

    pipeline_app = load_app(pipeline, app_name)
    with _log() as log:
        err.print(f"running app [bold]{pipeline_app.name}[/] from {pipeline}"
                  + (" until idle" if until_idle else " (Ctrl-C stops)"))
        result = pipeline_app.run(log, until_idle=until_idle, duration=duration)
    summary = result.to_dict()
    if metrics:
        summary["metrics"] = result.metrics
    print(json.dumps(summary, default=str))


# ---------------------------------------------------------------------- demo


@app.command()
def demo(
    duration: Annotated[float | None, typer.Option(help="Stop after this many seconds (default: Ctrl-C)")] = None,
    port: Annotated[int, typer.Option(help="Port of the web console and REST API")] = 8000,
    host: Annotated[str, typer.Option(help="Interface to bind (127.0.0.1: this machine only)")] = "127.0.0.1",
    browser: Annotated[bool, typer.Option("--browser/--no-browser", help="Open the console in a browser")] = True,
    rate: Annotated[int, typer.Option(help="Trades per second to simulate")] = 5_000,
    partitions: Annotated[int, typer.Option(help="Partitions of the trades topic")] = 4,
    seed: Annotated[int, typer.Option(help="Simulator seed")] = 7,
    plain: Annotated[bool, typer.Option("--plain", help="No live view in the terminal")] = False,
) -> None:
    """Run the platform end to end: simulated trades -> pipelines -> alerts, with a live web console."""
    from everstream.demo import run_demo

    summary = run_demo(OPTS.data_dir, OPTS.broker, duration, rate, partitions, seed, live=not plain, port=port,
                       host=host, open_browser=browser)
    print(json.dumps(summary))


def main() -> None:
    try:
        app()
    except EverstreamError as e:
        err.print(f"[red]error:[/] {e}", highlight=False)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
