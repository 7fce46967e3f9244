from edgetest import load, raises

airtime = load("airtime")
compat = load("compat")
errors = load("errors")


def test_time_on_air_matches_worked_values():
    # Semtech's LoRa calculator / AN1200.13 at BW 125 kHz, CR 4/5, 8-symbol preamble,
    # explicit header, CRC on (the numbers of DESIGN.md's reference table).
    assert airtime.time_on_air_us(48, 7) == 97536  # 97.5 ms
    assert airtime.time_on_air_us(48, 12) == 2301952  # 2302 ms (low data rate optimisation on)
    assert airtime.time_on_air_us(255, 7) == 399616  # 400 ms
    assert airtime.time_on_air_us(255, 12) == 9019392  # 9019 ms
    # by hand: SF9, 51 bytes: Tsym 4.096 ms, ceil((408 - 36 + 28 + 16) / 36) = 12 blocks x 5 + 8 = 68 symbols
    assert airtime.time_on_air_us(51, 9) == (4 * 8 + 17) * 4096 // 4 + 68 * 4096
    # wider bandwidth halves every symbol; implicit header and no CRC save bits
    assert airtime.time_on_air_us(51, 7, 250) * 2 == airtime.time_on_air_us(51, 7, 125)
    assert airtime.time_on_air_us(51, 7, crc=False, implicit_header=True) < airtime.time_on_air_us(51, 7)


def test_limits_per_spreading_factor_and_sub_band():
    assert [airtime.max_payload(sf) for sf in (7, 8, 9, 10, 11, 12)] == [250, 250, 123, 59, 59, 59]
    assert airtime.duty_divisor(868100) == 100 and airtime.duty_divisor(869525) == 10
    assert airtime.off_time_us(100000, 868100) == 9900000  # 1 %: 99 x time on air
    raises(errors.ConfigError, airtime.duty_divisor, 915000)
    raises(errors.ConfigError, airtime.max_payload, 6)
    raises(errors.ConfigError, airtime.time_on_air_us, 256, 7)
    raises(errors.ConfigError, airtime.time_on_air_us, 10, 7, 200)


def test_duty_cycle_waits_99_times_the_airtime_scaled():
    d = airtime.DutyCycle(868100, jitter=False)
    assert d.ready_in_ms(0) == 0
    d.spend(1000, 102656)  # a compact frame at SF7 ended at t = 1 s
    assert d.ready_in_ms(1000) == 10163 and d.ready_in_ms(11163) == 0
    fast = airtime.DutyCycle(869525, time_scale=50, jitter=False)  # 10 %: 9 x, on a medium 50x faster
    fast.spend(0, 1000000)
    assert fast.ready_in_ms(0) == 180
    wrap = compat.ticks_add(0, -50)
    d.spend(wrap, 102656)
    assert d.ready_in_ms(compat.ticks_add(wrap, 10000)) == 163  # across the ticks wrap
    spread = set()
    for _ in range(20):  # with jitter: never less than the rule, at most 1/8 more
        j = airtime.DutyCycle(868100)
        j.spend(0, 102656)
        spread.add(j.ready_in_ms(0))
    assert min(spread) >= 10163 and max(spread) <= 10163 + 10163 // 8 and len(spread) > 1
