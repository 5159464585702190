# Hardware abstraction: `machine` on the Pico (sys.platform == "rp2"), the simulated board of
# picogate_fw.sim_board elsewhere (MicroPython's unix port, driven by pg_sim.json). The
# application only uses what is here, so the same code runs on both.
import sys
import time

try:
    from typing import Any
except ImportError:
    pass

RP2 = sys.platform == "rp2"
TICKS_MASK = 0x3FFFFFFF  # ticks on the wire: modulo 2^30 on every port

_sim: Any = None
if RP2:
    import machine
    import rp2
else:
    from picogate_fw import sim_board

    _sim = sim_board.board()


def board_name():
    if RP2:
        m = sys.implementation._machine
        w = "W" in m  # "Raspberry Pi Pico W with RP2040", "Raspberry Pi Pico 2 W with RP2350"
        return ("pico2" if "RP2350" in m else "pico") + ("_w" if w else "")
    return _sim.board_name


def uid():
    """machine.unique_id() as upper-case hex (the USB serial number)."""
    if RP2:
        return "".join("%02X" % b for b in machine.unique_id())
    return _sim.uid


def service():
    """Called every main-loop round: the simulated board advances its inputs (fires pin IRQs)."""
    if _sim is not None:
        _sim.service()


def pin_in(n, pull):
    """An input pin; pull "up", "down" or None. Returns an object with value() and irq(handler,
    trigger)."""
    if RP2:
        if pull is None:
            return machine.Pin(n, machine.Pin.IN)
        return machine.Pin(n, machine.Pin.IN, machine.Pin.PULL_UP if pull == "up" else machine.Pin.PULL_DOWN)
    return _sim.pin(n, pull)


IRQ_RISING = 1
IRQ_FALLING = 2
if RP2:
    IRQ_RISING = machine.Pin.IRQ_RISING
    IRQ_FALLING = machine.Pin.IRQ_FALLING


def pin_out(n):
    """An output pin (for fw-bus's RS-485 DE pin too): value(v)."""
    if RP2:
        return machine.Pin(n, machine.Pin.OUT)
    return _sim.pin(n, None, out=True)


def pwm(n, freq):
    """PWM on pin n: duty_u16(v), deinit()."""
    if RP2:
        p = machine.PWM(machine.Pin(n))
        p.freq(freq)
        return p
    return _sim.pwm(n, freq)


def adc(n):
    """ADC on GPIO n (26-29), or channel 4 (the internal temperature sensor) with n = None."""
    if RP2:
        return machine.ADC(4 if n is None else n)
    return _sim.adc(n)


_PARITY = {"N": None, "E": 0, "O": 1}


def uart(uart_id, baud, bits, parity, stop, tx, rx):
    """A UART: write(buf), readinto(buf), any(), flush(). parity "N", "E", "O" (as in the config)
    or machine.UART's None, 0 (even), 1 (odd)."""
    if RP2:
        par = _PARITY.get(parity, parity)
        return machine.UART(
            uart_id, baudrate=baud, bits=bits, parity=par, stop=stop, tx=machine.Pin(tx), rx=machine.Pin(rx)
        )
    from picogate_fw.sim_uart import SimUART

    return SimUART(_sim.uart_path(uart_id), baud, bits, parity, stop)


def i2c(bus, sda, scl, freq):
    if RP2:
        return machine.I2C(bus, sda=machine.Pin(sda), scl=machine.Pin(scl), freq=freq)
    return _sim.i2c(bus)


def onewire(pin):
    """An object with the ds18x20.DS18X20 API on pin."""
    if RP2:
        import ds18x20
        import onewire

        return ds18x20.DS18X20(onewire.OneWire(machine.Pin(pin)))
    return _sim.onewire(pin)


def dht22(pin):
    """An object with the dht.DHT22 API on pin."""
    if RP2:
        import dht

        return dht.DHT22(machine.Pin(pin))
    return _sim.dht22(pin)


def wdt(timeout_ms):
    """Arm the watchdog (it cannot be stopped; it survives a soft reset). On the unix port:
    picogate.simboard's simulated one, when running under it."""
    if RP2:
        return machine.WDT(timeout=timeout_ms)
    return sim_board.wdt(timeout_ms)


def reset():
    """Hard reset (USB re-enumerates). On the unix port: exit status 75, picogate.simboard boots
    main.py again."""
    if RP2:
        machine.reset()
    sys.exit(75)


def bootloader():
    """Reboot into the UF2 bootloader. On the unix port: exit status 76."""
    if RP2:
        machine.bootloader()
    sys.exit(76)


def bootsel():
    """The BOOTSEL button is held."""
    if RP2:
        return rp2.bootsel_button() == 1
    return False


def ticks():
    return time.ticks_ms() & TICKS_MASK
