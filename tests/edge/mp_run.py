# Runs edge test modules under the MicroPython unix port:
#   micropython tests/edge/mp_run.py <repo root> test_cbor [test_cose ...]
# Every function named test_* is called; one line is printed per test and a summary line
# "N passed, N failed" closes the run. The exit status is 1 if any test failed or none ran.
import sys

root = sys.argv[1]
sys.path.insert(0, root)
sys.path.insert(0, root + "/tests/edge")

passed = failed = 0
for modname in sys.argv[2:]:
    mod = __import__(modname)
    for name in sorted(dir(mod)):
        if not name.startswith("test_"):
            continue
        fn = getattr(mod, name)
        try:
            fn()
        except Exception as exc:  # report and go on: one failure must not hide others
            failed += 1
            print("FAIL %s.%s: %s: %s" % (modname, name, type(exc).__name__, exc))
            sys.print_exception(exc)
        else:
            passed += 1
            print("PASS %s.%s" % (modname, name))
print("%d passed, %d failed" % (passed, failed))
sys.exit(1 if failed or not passed else 0)
