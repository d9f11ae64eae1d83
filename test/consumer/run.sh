#!/bin/sh
# usage: run.sh COMMAND [ARG...]
#
# Runs COMMAND, except under valgrind: `meson test --setup memcheck` (and
# drd) puts valgrind in front of every test command, scripts included, so
# that it would check the interpreter instead of the library. Then this
# exits 77, which meson reports as a skip. A shell under valgrind exits
# clean, and valgrind announces itself in LD_PRELOAD.
case "${LD_PRELOAD-}" in
*vgpreload*)
    echo "skipped under valgrind, which would check this test's shell and python3, not the library; plain \`meson test\` runs it"
    exit 77
    ;;
esac
exec "$@"
