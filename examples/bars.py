"""1-minute OHLCV + VWAP bars per symbol from simulated trades, with event time and late-event handling.

    python examples/bars.py                       # simulate trades into ./everstream-data, run, print bars
    everstream run examples/bars.py --until-idle  # run the same app on whatever is in the `trades` topic
"""

import everstream as es

app = es.App("market")
trades = app.stream("trades").with_watermark("ts", max_delay="2s", idle_timeout="5s")
bars = trades.window(es.tumbling("1m"), by="symbol", name="bars_1m").agg(
    open=es.first("price"),
    high=es.max("price"),
    low=es.min("price"),
    close=es.last("price"),
    volume=es.sum("qty"),
    vwap=es.vwap("price", "qty"),
    trades=es.count(),
)
bars.to("bars_1m")

if __name__ == "__main__":
    from everstream.engine.testing import read_topic
    from everstream.finance.simulator import TradeSimulator

    log = es.open_log()
    log.create_topic(es.TopicSpec("trades", partitions=4), exist_ok=True)
    sim = TradeSimulator(symbols=20, rate_per_s=500)
    with log.producer() as producer:
        for _ in range(10):
            producer.send_batch("trades", sim.next_batch(10_000), key="symbol", timestamp="ts")
    result = app.run(log, until_idle=True)
    print(result.to_dict())
    print(read_topic(log, "bars_1m").sort("window_start", "symbol").head(10))
    log.close()
