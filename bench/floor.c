// The floor of a first copy that keeps syncease's guarantees: the least work a mirror can do
// that places each file only once it is complete, checks that the source did not change while
// it was read, and gives every file and directory its mode and time. It walks SRC (one
// getdents pass and one fstatat an entry), makes each directory, copies each regular file
// through an unnamed temporary (O_TMPFILE, copy_file_range, fstat of the source, futimens,
// linkat; a file listed as empty is not opened), then gives every directory its mode and
// time. Directories are taken from a shared queue and their files copied as they are listed,
// on THREADS threads (default 2), so the walk overlaps the copies and no listing is kept.
//
// It is a yardstick for the bench's small and huge trees (plain files and directories whose
// modes let their owner in), not a tool: no filters, links, owners or deletions, and it stops
// at the first error. DST must not exist.
//
//   cc -O2 -pthread -o floor bench/floor.c && ./floor SRC DST [THREADS]
#define _GNU_SOURCE
#include <dirent.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

struct dir {
    int src, dst;             // handles, closed when the directory is done
    struct timespec mtime;    // for the last pass
    mode_t mode;
    char *path;               // relative to DST, for the last pass
};

static struct dir **queue;
static size_t queued, taken, cap, busy;
static struct dir **done;
static size_t ndone, capdone;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t more = PTHREAD_COND_INITIALIZER;
static int dstroot;

static void die(const char *what, const char *name) {
    perror(what);
    fprintf(stderr, "at %s\n", name);
    exit(1);
}

// Append `d` to the growing list `*list` of `*n` (room for `*room`); under `lock`.
static void append(struct dir ***list, size_t *n, size_t *room, struct dir *d) {
    if (*n == *room) {
        *room = *room ? *room * 2 : 1024;
        *list = realloc(*list, *room * sizeof **list);
        if (!*list) die("realloc", "");
    }
    (*list)[(*n)++] = d;
}

static void push(struct dir *d) {
    pthread_mutex_lock(&lock);
    append(&queue, &queued, &cap, d);
    pthread_cond_signal(&more);
    pthread_mutex_unlock(&lock);
}

static void copy(int sdir, int ddir, const char *name, const struct stat *st) {
    // A file listed as empty has nothing to read: the copy is the file as listed.
    int from = -1;
    if (st->st_size > 0) {
        from = openat(sdir, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
        if (from < 0) die("open", name);
    }
    int to = openat(ddir, ".", O_TMPFILE | O_RDWR | O_CLOEXEC, st->st_mode & 0777);
    if (to < 0) die("O_TMPFILE", name);
    loff_t in = 0, out = 0;
    while (in < st->st_size) {
        ssize_t n = copy_file_range(from, &in, to, &out, st->st_size - in, 0);
        if (n <= 0) die("copy_file_range", name);
    }
    struct stat after;
    if (from >= 0 && (fstat(from, &after) || after.st_size != st->st_size ||
                      after.st_mtim.tv_sec != st->st_mtim.tv_sec ||
                      after.st_mtim.tv_nsec != st->st_mtim.tv_nsec))
        die("changed", name);
    struct timespec times[2] = {{.tv_nsec = UTIME_OMIT}, st->st_mtim};
    if (futimens(to, times)) die("futimens", name);
    if (linkat(to, "", ddir, name, AT_EMPTY_PATH)) die("linkat", name);
    close(to);
    if (from >= 0) close(from);
}

static void list(struct dir *d) {
    int fd = dup(d->src);
    DIR *it = fdopendir(fd);
    if (!it) die("fdopendir", d->path);
    struct dirent *e;
    while ((e = readdir(it))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        struct stat st;
        if (fstatat(d->src, e->d_name, &st, AT_SYMLINK_NOFOLLOW)) die("fstatat", e->d_name);
        if (S_ISDIR(st.st_mode)) {
            if (mkdirat(d->dst, e->d_name, 0700)) die("mkdirat", e->d_name);
            struct dir *sub = calloc(1, sizeof *sub);
            sub->src = openat(d->src, e->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
            sub->dst = openat(d->dst, e->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
            if (sub->src < 0 || sub->dst < 0) die("open dir", e->d_name);
            sub->mtime = st.st_mtim;
            sub->mode = st.st_mode & 07777;
            if (asprintf(&sub->path, "%s/%s", d->path, e->d_name) < 0) die("asprintf", "");
            push(sub);
        } else if (S_ISREG(st.st_mode)) {
            copy(d->src, d->dst, e->d_name, &st);
        }
    }
    closedir(it);
    close(d->src);
    close(d->dst);
}

static void *worker(void *arg) {
    (void)arg;
    for (;;) {
        pthread_mutex_lock(&lock);
        while (taken == queued && busy > 0) pthread_cond_wait(&more, &lock);
        if (taken == queued) {
            pthread_cond_broadcast(&more);
            pthread_mutex_unlock(&lock);
            return NULL;
        }
        struct dir *d = queue[taken++];
        busy++;
        pthread_mutex_unlock(&lock);
        list(d);
        pthread_mutex_lock(&lock);
        busy--;
        append(&done, &ndone, &capdone, d);
        pthread_cond_broadcast(&more);
        pthread_mutex_unlock(&lock);
    }
}

static size_t next_meta;

// Every directory's mode and time, children mostly before parents (the reverse of the order
// they were finished in); any order would do, as every mode here lets its owner in.
static void *meta(void *arg) {
    (void)arg;
    for (;;) {
        size_t i = __atomic_fetch_add(&next_meta, 1, __ATOMIC_RELAXED);
        if (i >= ndone) return NULL;
        struct dir *d = done[ndone - 1 - i];
        const char *rel = d->path[0] ? d->path + 1 : ".";
        struct timespec times[2] = {{.tv_nsec = UTIME_OMIT}, d->mtime};
        if (fchmodat(dstroot, rel, d->mode, 0)) die("chmod", rel);
        if (utimensat(dstroot, rel, times, AT_SYMLINK_NOFOLLOW)) die("utimensat", rel);
    }
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: floor SRC DST [THREADS]\n");
        return 2;
    }
    int threads = argc > 3 ? atoi(argv[3]) : 2;
    if (threads < 1 || threads > 64) {
        fprintf(stderr, "THREADS: 1 to 64\n");
        return 2;
    }
    struct stat st;
    if (stat(argv[1], &st)) die("stat", argv[1]);
    if (mkdir(argv[2], 0700)) die("mkdir", argv[2]);
    struct dir *root = calloc(1, sizeof *root);
    root->src = open(argv[1], O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    root->dst = open(argv[2], O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    dstroot = dup(root->dst);
    root->mtime = st.st_mtim;
    root->mode = st.st_mode & 07777;
    root->path = "";
    push(root);
    pthread_t t[64];
    for (int i = 0; i < threads; i++) pthread_create(&t[i], NULL, worker, NULL);
    for (int i = 0; i < threads; i++) pthread_join(t[i], NULL);
    for (int i = 0; i < threads; i++) pthread_create(&t[i], NULL, meta, NULL);
    for (int i = 0; i < threads; i++) pthread_join(t[i], NULL);
    return 0;
}
