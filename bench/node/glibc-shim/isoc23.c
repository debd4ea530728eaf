/*
 * The three C23 entry points (glibc 2.38) that the prebuilt uWebSockets.js binary
 * imports, for a glibc older than 2.38 (Debian 12 has 2.36). C23 only adds "0b"
 * prefixes to base 0/2 conversions; the binary's uses (decimal and hex numbers in
 * HTTP heads) behave the same with the pre-C23 functions, to which these forward.
 * bench/run.sh builds this into libisoc23.so and links it into the binary with
 * patchelf; see bench/README.md.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

long __isoc23_strtol(const char *s, char **end, int base) { return strtol(s, end, base); }

unsigned long __isoc23_strtoul(const char *s, char **end, int base) { return strtoul(s, end, base); }

int __isoc23_sscanf(const char *s, const char *format, ...) {
    va_list args;
    va_start(args, format);
    int n = vsscanf(s, format, args);
    va_end(args);
    return n;
}
