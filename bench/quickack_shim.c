/*
 * LD_PRELOAD shim for bench/milter.py's no-op C milter: after every read from a TCP socket,
 * acknowledge at once (TCP_QUICKACK), as drossel's milter does after each read.
 *
 * Why: Postfix writes each milter packet as its own small segment without TCP_NODELAY, and
 * most packets get no reply (macros, and every step the no-op negotiated away), so the
 * receiver's delayed-ACK timer (40 ms) holds Postfix's next packet behind Nagle's algorithm:
 * a plain libmilter no-op on inet: stalls ~44 ms per message, which makes it a slow anchor,
 * not the physical limit.  libmilter has no hook for its reads, hence this shim.  Unix
 * sockets have neither mechanism (the noop-unix variant runs without it).
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

static ssize_t (*real_read)(int, void *, size_t);

ssize_t read(int fd, void *buf, size_t count)
{
    if (real_read == NULL)
        real_read = (ssize_t (*)(int, void *, size_t)) dlsym(RTLD_NEXT, "read");
    ssize_t n = real_read(fd, buf, count);
    if (n > 0) {
        int one = 1;
        /* fails harmlessly (ENOTSOCK, EOPNOTSUPP) on anything that is not a TCP socket */
        setsockopt(fd, IPPROTO_TCP, TCP_QUICKACK, &one, sizeof one);
    }
    return n;
}
