// distributed.c: process roles and bootstrap (see distributed.h): MPI when launched by it, otherwise
// the environment plus a file or TCP rendezvous for the one-off broadcast of the NCCL id, marked with the
// launch's run id so that no rank takes another job's for its own.
#define _GNU_SOURCE  // sched_setaffinity, CPU_SET
#include "distributed.h"

#include <arpa/inet.h>
#include <errno.h>
#include <omp.h>
#include <sched.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdarg.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#ifdef HAVE_MPI
#include <mpi.h>
#endif

#include "cpuset.h"
#include "utils.h"

static double process_start;  // for rejecting rendezvous files left by an earlier job when there is no run id
static int broadcasts;         // rendezvous exchanges so far (each gets its own file / connection round)

// An environment variable's count; `fallback` when it is not set. Set but empty (RANK=$UNSET in a script) is an error.
static int env_int(const char *name, int fallback) {
    const char *v = getenv(name);
    if (!v) return fallback;
    if (!*v) fatal("environment variable %s is set but empty", name);
    char *end;
    long x = strtol(v, &end, 10);
    if (*end || x < 0 || x > 1 << 24) fatal("environment variable %s=%s is not a valid count", name, v);
    return (int)x;
}

static int rendezvous_timeout(void) { return env_int("TRAIN_CLIP_RENDEZVOUS_TIMEOUT", 300); }

void dist_fail(const Dist *d, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fflush(stdout);
    fprintf(stderr, "error: rank %d of %d: ", d->rank, d->world);
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
#ifdef HAVE_MPI
    if (d->mpi) MPI_Abort(MPI_COMM_WORLD, 1);  // every rank exits, none is left waiting
#endif
    exit(1);
}

// tcp:HOST:PORT into HOST (an IPv6 address with or without brackets: the last ':' ends it) and PORT (1-65535),
// or an error naming TRAIN_CLIP_RENDEZVOUS.
static void split_host_port(const Dist *d, char *host, size_t cap, char *port, size_t pcap) {
    const char *hp = d->rendezvous + 4, *colon = strrchr(hp, ':');
    char *end = NULL;
    long p = colon && colon[1] >= '0' && colon[1] <= '9' ? strtol(colon + 1, &end, 10) : 0;
    int n = colon ? (int)(colon - hp) : 0;
    if (n >= 2 && hp[0] == '[' && hp[n - 1] == ']') hp++, n -= 2;  // [::1]
    if (!end || *end || p < 1 || p > 65535 || n < 1 || (size_t)n >= cap)
        dist_fail(d, "TRAIN_CLIP_RENDEZVOUS=%s: expected tcp:HOST:PORT with a port 1-65535", d->rendezvous);
    snprintf(host, cap, "%.*s", n, hp);
    snprintf(port, pcap, "%ld", p);
}

// This launch's identity into d->run_id: the same on all its ranks, almost surely not another launch's.
// TRAIN_CLIP_RUN_ID, else the launcher's: the srun step (slurm's job, step and requeue count) and torchrun's run
// (--rdzv-id and restart count), both when torchrun runs under srun; else "" (none known). Not slurm's batch or
// interactive step (ids from 0xfffffff0 up) or torchrun's default --rdzv-id "none" by themselves: a script can
// start many runs within one.
static void set_run_id(Dist *d) {
    const char *own = getenv("TRAIN_CLIP_RUN_ID"), *job = getenv("SLURM_JOB_ID"), *step = getenv("SLURM_STEP_ID"),
               *torch = getenv("TORCHELASTIC_RUN_ID"), *requeues = getenv("SLURM_RESTART_COUNT"),
               *restarts = getenv("TORCHELASTIC_RESTART_COUNT");
    char slurm[300] = "", torchrun[300] = "";  // longer than run_id: a cut one is too long below
    if (own && !*own) fatal("environment variable TRAIN_CLIP_RUN_ID is set but empty");
    if (job && step && strtoul(step, NULL, 10) < 0xfffffff0ul)
        snprintf(slurm, sizeof(slurm), "slurm:%s.%s.%s", job, step, requeues ? requeues : "0");
    if (torch && (slurm[0] || strcmp(torch, "none")))
        snprintf(torchrun, sizeof(torchrun), "torchrun:%s.%s", torch, restarts ? restarts : "0");
    size_t n = own ? (size_t)snprintf(d->run_id, sizeof(d->run_id), "%s", own)
                   : (size_t)snprintf(d->run_id, sizeof(d->run_id), "%s%s%s", slurm, slurm[0] && torchrun[0] ? "," : "", torchrun);
    int bad = n >= sizeof(d->run_id);
    for (size_t i = 0; i < n && !bad; i++) bad = d->run_id[i] <= ' ' || d->run_id[i] > '~';  // one word in the header line
    if (bad)
        fatal("the run id '%s' (%s) must be under %zu printable characters without spaces", own ? own : d->run_id,
              own ? "TRAIN_CLIP_RUN_ID" : "from SLURM_JOB_ID / TORCHELASTIC_RUN_ID: set TRAIN_CLIP_RUN_ID instead", sizeof(d->run_id));
}

void dist_init(Dist *d) {
    memset(d, 0, sizeof(*d));
    process_start = (double)time(NULL);
    int under_mpi = getenv("OMPI_COMM_WORLD_SIZE") || getenv("PMI_SIZE") || getenv("PMIX_RANK");
#ifdef HAVE_MPI
    if (under_mpi) {
        MPI_Init(NULL, NULL);
        MPI_Comm_rank(MPI_COMM_WORLD, &d->rank);
        MPI_Comm_size(MPI_COMM_WORLD, &d->world);
        MPI_Comm local;
        MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, d->rank, MPI_INFO_NULL, &local);
        MPI_Comm_rank(local, &d->local_rank);
        MPI_Comm_size(local, &d->local_size);
        MPI_Comm_free(&local);
        d->mpi = 1;
        return;
    }
#else
    (void)under_mpi;
#endif
    // Not an MPI start: WORLD_SIZE in the environment gives this process its place, whichever launcher ran it. Without
    // it, a launcher that started several processes would leave each training alone on the same data: stop instead.
    const char *launched[] = {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "SLURM_STEP_NUM_TASKS"};  // mpirun, MPI launchers, srun
    for (int k = 0; k < 3 && !getenv("WORLD_SIZE"); k++)
        if (env_int(launched[k], 1) > 1)
            fatal("%s=%s: the launcher started %s processes, but this one was told no rank, so each would train alone on the "
#ifdef HAVE_MPI
                  "same data; start through MPI (mpirun, or srun --mpi=pmix) "
#else
                  "same data; this build has no MPI (Debian: apt-get install libopenmpi-dev, then rebuild) "
#endif
                  "or give each process RANK, WORLD_SIZE, LOCAL_RANK and TRAIN_CLIP_RENDEZVOUS",
                  launched[k], getenv(launched[k]), getenv(launched[k]));
    d->world = env_int("WORLD_SIZE", 1);
    d->rank = env_int("RANK", 0);
    d->local_size = 1;
    if (d->world < 1 || d->rank >= d->world) fatal("RANK=%d is not below WORLD_SIZE=%d", d->rank, d->world);
    if (d->world > 1 && !getenv("RANK")) fatal("WORLD_SIZE=%d, but RANK is not set (every process would be rank 0)", d->world);
    if (d->world == 1) return;
    d->local_rank = env_int("LOCAL_RANK", env_int("SLURM_LOCALID", d->rank));
    // torchrun's, slurm's (with --ntasks-per-node) or MPICH's name for the ranks on this machine; else one machine
    d->local_size = env_int("LOCAL_WORLD_SIZE", env_int("SLURM_NTASKS_PER_NODE", env_int("MPI_LOCALNRANKS", d->world)));
    if (d->local_size < 1 || d->local_rank >= d->local_size)
        fatal("LOCAL_RANK=%d is not below the ranks on this machine (%d: LOCAL_WORLD_SIZE, SLURM_NTASKS_PER_NODE or WORLD_SIZE)",
              d->local_rank, d->local_size);
    const char *r = getenv("TRAIN_CLIP_RENDEZVOUS");
    if (r && *r) snprintf(d->rendezvous, sizeof(d->rendezvous), "%s", r);
    else if (getenv("MASTER_ADDR") && getenv("MASTER_PORT")) {  // torchrun's store owns MASTER_PORT: use the next one
        int port = env_int("MASTER_PORT", 0);
        if (!*getenv("MASTER_ADDR")) fatal("environment variable MASTER_ADDR is set but empty");
        if (port < 1 || port > 65534) fatal("MASTER_PORT=%d: the rendezvous takes the port after it, so it must be 1-65534", port);
        snprintf(d->rendezvous, sizeof(d->rendezvous), "tcp:%s:%d", getenv("MASTER_ADDR"), port + 1);
    } else
        fatal("WORLD_SIZE=%d without MPI needs a rendezvous: TRAIN_CLIP_RENDEZVOUS=file:/shared/fresh/path or tcp:HOST:PORT "
              "(or MASTER_ADDR and MASTER_PORT)", d->world);
    char host[256], port[32];
    if (!strncmp(d->rendezvous, "tcp:", 4)) split_host_port(d, host, sizeof(host), port, sizeof(port));  // or stops here
    else if (strncmp(d->rendezvous, "file:", 5) || !d->rendezvous[5])
        fatal("TRAIN_CLIP_RENDEZVOUS=%s: expected file:PATH or tcp:HOST:PORT", d->rendezvous);
    set_run_id(d);
}

void dist_slice(int n, int r, int size, int *lo, int *hi) {
    *lo = (int)((long)r * n / size), *hi = (int)((long)(r + 1) * n / size);
    if (*hi <= *lo) *lo = *lo < n ? *lo : n - 1, *hi = *lo + 1;  // more ranks than CPUs: neighbours share one
}

void dist_place_threads(const Dist *d, int threads) {
    if (d->local_size < 2) return;
    cpu_set_t affinity, mine, cgroup;
    if (sched_getaffinity(0, sizeof(affinity), &affinity)) fatal("sched_getaffinity: %s", strerror(errno));
    // what the process may use: its container's (cgroup's) CPUs, else the machine's
    int online = (int)sysconf(_SC_NPROCESSORS_ONLN), allowed = cpuset_allowed(&cgroup) == 0 ? CPU_COUNT(&cgroup) : online;
    int bound = cpuset_place(allowed, &affinity, d->local_rank, d->local_size, &mine);
    if (!bound && sched_setaffinity(0, sizeof(mine), &mine)) fatal("sched_setaffinity: %s", strerror(errno));
    int share = allowed / d->local_size, n = CPU_COUNT(&mine);
    if (threads <= 0 && !getenv("OMP_NUM_THREADS")) omp_set_num_threads(share < 1 ? 1 : share < n ? share : n);
    char list[256], how[64] = "bound by the launcher";
    cpuset_print(list, sizeof(list), &mine);
    if (!bound) snprintf(how, sizeof(how), "its slice of the %s %d CPUs", allowed < online ? "container's" : "machine's", allowed);
    printf("cpus: local rank %d of %d on CPUs %s (%s), %d OpenMP threads\n", d->local_rank, d->local_size, list, how,
           omp_get_max_threads());
    if (bound && n < share)
        fprintf(stderr, "warning: local rank %d is bound to %d CPU(s), fewer than its share of %d: the data loader, NCCL and "
                "kernel launches share them (mpirun binds each rank to one core when np <= 2: add --bind-to none)\n",
                d->local_rank, n, share);
}

void dist_finalize(Dist *d) {
#ifdef HAVE_MPI
    if (d->mpi) MPI_Finalize();
#endif
}

// ---------------------------------------------------------------- the header line of both rendezvous kinds
// Rank 0 writes it before the blob (file) or sends it before the blob (TCP), and every other rank sends its own to
// rank 0 (TCP): who wrote it and for which run. It starts with the format's version, so that an older train_clip's
// file or hello reads as another job's rather than being misread.
#define HEADER_START "train_clip rendezvous v2 "

typedef struct {
    int rank, world;
    size_t bytes;
    char run[sizeof(((Dist *)0)->run_id)];
} Header;

static void header_line(const Dist *d, size_t bytes, char *line, size_t cap) {
    snprintf(line, cap, HEADER_START "rank=%d world=%d bytes=%zu run=%s\n", d->rank, d->world, bytes, d->run_id);
}

// 0 when line is this version's header line, -1 when not
static int header_parse(const char *line, Header *h) {
    int at = 0;
    if (sscanf(line, HEADER_START "rank=%d world=%d bytes=%zu run=%n", &h->rank, &h->world, &h->bytes, &at) != 3 || !at) return -1;
    size_t n = strcspn(line + at, "\n");
    if (line[at + n] != '\n' || n >= sizeof(h->run)) return -1;
    snprintf(h->run, sizeof(h->run), "%.*s", (int)n, line + at);
    return 0;
}

static const char *or_none(const char *run_id) { return *run_id ? run_id : "(none)"; }

// ---------------------------------------------------------------- file rendezvous

static void file_broadcast(Dist *d, void *buf, size_t bytes) {
    char path[600], tmp[640], line[256];
    snprintf(path, sizeof(path), "%s.%d", d->rendezvous + 5, broadcasts);
    if (d->rank == 0) {
        snprintf(tmp, sizeof(tmp), "%s.tmp", path);
        FILE *f = fopen(tmp, "wb");
        if (!f) dist_fail(d, "rendezvous file %s: %s", tmp, strerror(errno));
        header_line(d, bytes, line, sizeof(line));
        fwriteCheck(line, 1, strlen(line), f);
        fwriteCheck(buf, 1, bytes, f);
        fcloseCheck(f);
        if (rename(tmp, path) != 0) dist_fail(d, "rendezvous file %s: %s", path, strerror(errno));
        return;
    }
    // A file that is not this run's (an earlier job's at the same path) is not an error until the timeout: rank 0
    // may not have replaced it yet.
    char found[400] = "";  // why the file there is not this run's, for the timeout's error
    int timeout = rendezvous_timeout();
    for (double deadline = now_seconds() + timeout;;) {  // by the clock: an open on a shared file system may take long
        struct stat st;
        FILE *f = fopen(path, "rb");
        if (f) {
            if (fstat(fileno(f), &st) != 0) dist_fail(d, "rendezvous file %s: %s", path, strerror(errno));
            Header h;
            // the header line read by itself (fgets stops at its '\n'): the blob may start with whitespace
            int parsed = fgets(line, sizeof(line), f) && header_parse(line, &h) == 0, same = parsed && !strcmp(h.run, d->run_id);
            // without a run id, a file older than this process is an earlier job's
            if (same && (d->run_id[0] || (double)st.st_mtime >= process_start - 60)) {
                if (h.world != d->world || h.bytes != bytes)
                    dist_fail(d, "rendezvous file %s (run id %s) is for a world of %d and %zu bytes, this rank's is %d and %zu: another "
                              "job's? use a fresh path per job", path, or_none(h.run), h.world, h.bytes, d->world, bytes);
                freadCheck(buf, 1, bytes, f);
                fclose(f);
                return;
            }
            fclose(f);
            if (!parsed)
                snprintf(found, sizeof(found), "is not this version's (an older train_clip's, or not a rendezvous file; this run's "
                         "id is %s)", or_none(d->run_id));
            else if (!same)
                snprintf(found, sizeof(found), "belongs to run id %s, not this run's %s (an earlier job's?)", or_none(h.run),
                         or_none(d->run_id));
            else
                snprintf(found, sizeof(found), "is older than this process (an earlier run's, or this machine's clock is ahead of "
                         "the file server's; a TRAIN_CLIP_RUN_ID for the run makes the clocks irrelevant)");
        }
        if (now_seconds() > deadline && found[0])
            dist_fail(d, "the rendezvous file %s %s, and rank 0 did not replace it within %d s: use a fresh path per job", path,
                      found, timeout);
        if (now_seconds() > deadline)
            dist_fail(d, "rank 0 did not write the rendezvous file %s within %d s (is rank 0 running? is the path shared?)", path, timeout);
        usleep(50000);
    }
}

// ---------------------------------------------------------------- TCP rendezvous

static int full_io(int fd, void *buf, size_t n, int writing) {
    uint8_t *p = buf;
    while (n > 0) {
        ssize_t k = writing ? send(fd, p, n, MSG_NOSIGNAL) : recv(fd, p, n, 0);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) return -1;
        p += k, n -= (size_t)k;
    }
    return 0;
}

// Bounds the socket's receives and sends, and a connect (Linux applies SO_SNDTIMEO to it), to `seconds` each.
static void socket_timeouts(const Dist *d, int s, double seconds) {
    if (seconds < 0.001) seconds = 0.001;  // 0 would mean no limit
    struct timeval tv = {.tv_sec = (time_t)seconds, .tv_usec = (suseconds_t)((seconds - (double)(time_t)seconds) * 1e6)};
    if (setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) || setsockopt(s, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)))
        dist_fail(d, "rendezvous: setsockopt: %s", strerror(errno));
}

// A header line from the socket into line, '\0'-terminated: -1 (errno EPROTO) on bytes that cannot begin one, as soon
// as they come (an older train_clip's hello is binary: not waited on for a '\n' that never comes) or past cap.
static int recv_line(int fd, char *line, size_t cap) {
    for (size_t n = 0; n + 1 < cap; n++) {
        if (full_io(fd, line + n, 1, 0)) return -1;
        if (n < strlen(HEADER_START) && line[n] != HEADER_START[n]) break;
        if (line[n] == '\n') return line[n + 1] = '\0', 0;
    }
    errno = EPROTO;
    return -1;
}

// Every rank sends its header line to rank 0, which answers with its own, then the blob to the ranks of this run.
// Both compare the run ids: rank 0 turns a rank of another run away (a warning; it does not count) and waits on
// for its own; the rank turned away stops naming both. A rank of this run that does not fit is an error of the
// run's (with no run id on either side, every rank is taken as this run's, as before run ids).
static void tcp_broadcast(Dist *d, void *buf, size_t bytes) {
    char host[256], port[32], mine[256], line[256];
    split_host_port(d, host, sizeof(host), port, sizeof(port));
    header_line(d, bytes, mine, sizeof(mine));
    int timeout = rendezvous_timeout();
    double deadline = now_seconds() + timeout;  // by the clock: a connect or a name lookup may itself take long
    Header h;
    if (d->rank == 0) {
        // every address of this machine, IPv6 and IPv4 (one socket for both), or IPv4 alone where there is no IPv6
        int s = socket(AF_INET6, SOCK_STREAM, 0), one = 1, zero = 0;
        struct sockaddr_in6 a6 = {.sin6_family = AF_INET6, .sin6_port = htons((uint16_t)atoi(port)), .sin6_addr = IN6ADDR_ANY_INIT};
        struct sockaddr_in a4 = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(port)), .sin_addr.s_addr = htonl(INADDR_ANY)};
        struct sockaddr *a = (struct sockaddr *)&a6;
        socklen_t alen = sizeof(a6);
        if (s >= 0 && setsockopt(s, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof(zero)) != 0) close(s), s = -1;
        if (s < 0) s = socket(AF_INET, SOCK_STREAM, 0), a = (struct sockaddr *)&a4, alen = sizeof(a4);
        if (s < 0 || setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) || bind(s, a, alen) != 0 || listen(s, d->world) != 0)
            dist_fail(d, "rendezvous: cannot listen on port %s: %s", port, strerror(errno));
        int *seen = callocCheck((size_t)d->world, sizeof(int));
        char turned[300] = "";  // the last connection turned away, for the timeout's error
        for (int joined = 1; joined < d->world;) {
            struct pollfd pf = {s, POLLIN, 0};
            double left = deadline - now_seconds();
            if (left <= 0 || poll(&pf, 1, left < 1e6 ? (int)(left * 1000) + 1 : 1 << 30) <= 0) {
                char missing[256] = "";
                for (int r = 1, len = 0; r < d->world && len < 200; r++)
                    if (!seen[r]) len += snprintf(missing + len, sizeof(missing) - (size_t)len, " %d", r);
                dist_fail(d, "rendezvous on port %s: ranks%s did not connect within %d s%s", port, missing, timeout, turned);
            }
            int c = accept(s, NULL, NULL);
            if (c < 0) dist_fail(d, "rendezvous on port %s: accept: %s", port, strerror(errno));
            socket_timeouts(d, c, deadline - now_seconds());  // a peer that connects and says nothing is not waited for forever
            int said = recv_line(c, line, sizeof(line)) == 0 && header_parse(line, &h) == 0;
            // rank 0's header in answer to every rank, before it is judged: one turned away or stopped below learns why
            if (said) (void)full_io(c, mine, strlen(mine), 1);  // a failure shows in sending the blob, or does not matter
            if (!said || strcmp(h.run, d->run_id)) {
                char who[250];
                if (said) snprintf(who, sizeof(who), "rank %d of run id %s", h.rank, or_none(h.run));
                else snprintf(who, sizeof(who), "a connection that sent no " HEADER_START "header (%s: an older train_clip's rank, "
                              "or not train_clip?)", strerror(errno));
                fprintf(stderr, "warning: rank 0 of %d: rendezvous on port %s: turned away %s, not a rank of this run (id %s)\n",
                        d->world, port, who, or_none(d->run_id));
                snprintf(turned, sizeof(turned), "; turned away: %s", who);
                close(c);
                continue;
            }
            if (h.world != d->world)
                dist_fail(d, "rendezvous on port %s: rank %d of a world of %d connected (run id %s, the same as this run's): a rank of "
                          "another job? give each job its own port and run id", port, h.rank, h.world, or_none(h.run));
            if (h.rank <= 0 || h.rank >= d->world || seen[h.rank] || h.bytes != bytes)
                dist_fail(d, "rendezvous on port %s: a bad or duplicate peer connected (rank %d, %zu bytes, run id %s)", port, h.rank,
                          h.bytes, or_none(h.run));
            seen[h.rank] = 1, joined++;
            if (full_io(c, buf, bytes, 1)) dist_fail(d, "rendezvous: sending to rank %d failed", h.rank);
            close(c);
        }
        free(seen);
        close(s);
        return;
    }
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *res = NULL;  // a name, IPv4 or IPv6
    char last[400] = "no attempt";
    for (;;) {
        int e = getaddrinfo(host, port, &hints, &res);
        if (e) snprintf(last, sizeof(last), "%s: %s", host, gai_strerror(e));
        for (struct addrinfo *ai = e ? NULL : res; ai; ai = ai->ai_next) {  // each of the host's addresses in turn
            int s = socket(ai->ai_family, SOCK_STREAM, 0);
            if (s >= 0) socket_timeouts(d, s, deadline - now_seconds());
            if (s >= 0 && connect(s, ai->ai_addr, ai->ai_addrlen) == 0) {
                freeaddrinfo(res);
                if (full_io(s, mine, strlen(mine), 1) || recv_line(s, line, sizeof(line)) || header_parse(line, &h))
                    dist_fail(d, "rendezvous with %s:%s: the exchange broke off or timed out, or what answered is not this version's "
                              "train_clip rank 0 (%s)", host, port, strerror(errno));
                if (strcmp(h.run, d->run_id))
                    dist_fail(d, "rendezvous with %s:%s: rank 0 there is of run id %s, not this run's %s (two jobs given one port? "
                              "give each its own)", host, port, or_none(h.run), or_none(d->run_id));
                if (h.world != d->world || h.bytes != bytes)
                    dist_fail(d, "rendezvous with %s:%s: rank 0 there (run id %s) has a world of %d and %zu bytes, this rank %d and "
                              "%zu (two jobs given one port?)", host, port, or_none(h.run), h.world, h.bytes, d->world, bytes);
                if (full_io(s, buf, bytes, 0))
                    dist_fail(d, "rendezvous with %s:%s: the exchange broke off or timed out (%s)", host, port, strerror(errno));
                close(s);
                return;
            }
            snprintf(last, sizeof(last), "%s", strerror(errno));
            if (s >= 0) close(s);
        }
        if (!e) freeaddrinfo(res);
        if (now_seconds() > deadline)
            dist_fail(d, "rendezvous: rank 0 at %s:%s did not answer within %d s (last: %s)", host, port, timeout, last);
        usleep(100000);
    }
}

void dist_broadcast(Dist *d, void *buf, size_t bytes) {
    if (d->world == 1) return;
#ifdef HAVE_MPI
    if (d->mpi) {
        MPI_Bcast(buf, (int)bytes, MPI_BYTE, 0, MPI_COMM_WORLD);
        return;
    }
#endif
    if (!strncmp(d->rendezvous, "file:", 5)) file_broadcast(d, buf, bytes);
    else tcp_broadcast(d, buf, bytes);
    broadcasts++;
}

// ---------------------------------------------------------------- CPU collectives (MPI)

static void need_mpi(const Dist *d, const char *what) {
    if (!d->mpi) dist_fail(d, "%s across %d processes needs MPI (mpirun); the environment start is for GPU (NCCL) runs", what, d->world);
}

void dist_allreduce_sum(Dist *d, float *buf, size_t n) {
    if (d->world == 1) return;
    need_mpi(d, "a CPU all-reduce");
#ifdef HAVE_MPI
    for (size_t off = 0; off < n; off += (size_t)1 << 30) {
        size_t k = n - off < ((size_t)1 << 30) ? n - off : ((size_t)1 << 30);
        MPI_Allreduce(MPI_IN_PLACE, buf + off, (int)k, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
    }
#endif
}

void dist_allgather(Dist *d, const float *mine, float *all, size_t n) {
    if (d->world == 1) {
        memcpy(all, mine, n * sizeof(float));
        return;
    }
    need_mpi(d, "a CPU all-gather");
#ifdef HAVE_MPI
    MPI_Allgather(mine, (int)n, MPI_FLOAT, all, (int)n, MPI_FLOAT, MPI_COMM_WORLD);
#endif
}

void dist_barrier(Dist *d) {
#ifdef HAVE_MPI
    if (d->mpi) MPI_Barrier(MPI_COMM_WORLD);
#endif
}
