/*
 * volinit-probe: what `volinit check` runs in a throwaway copy of a service's container, as
 * the service's user, in place of the service's own entrypoint. It never runs the service's
 * code, needs no shell (distroless images have none), and changes nothing but probe files it
 * removes at once.
 *
 * Usage: volinit-probe [--volume DIR]... [--persist DIR]...
 * Prints one JSON object per line on stdout:
 *   {"fact":"id", ...}          who it runs as
 *   {"fact":"temp", ...}        each dir Python's tempfile tries, in its order, until one takes a file
 *   {"fact":"tempdir", ...}     the chosen one with its free space (statvfs) and filesystem type
 *   {"fact":"cache", ...}       each cache dir the environment names (and $HOME/.cache, $HOME)
 *   {"fact":"volume", ...}      each volume root: owner, mode, whether it takes a file, whether empty
 *   {"fact":"persist", ...}     filesystem type under each path whose data must last
 * Exit 0 once the facts are printed; 2 on bad usage.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/statvfs.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#define TMPFS_MAGIC 0x01021994
#define OVERLAY_MAGIC 0x794c7630
#define MAX_ARGS 256

/* json_str: print s as a JSON string, escaping anything a path may hold */
static void json_str(const char *s) {
    putchar('"');
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\') printf("\\%c", *p);
        else if (*p < 0x20 || *p == 0x7f) printf("\\u%04x", *p);
        else putchar(*p);
    }
    putchar('"');
}

static const char *errname(int e) {
    switch (e) {
    case 0: return "";
    case EACCES: return "EACCES";
    case EPERM: return "EPERM";
    case EROFS: return "EROFS";
    case ENOENT: return "ENOENT";
    case ENOTDIR: return "ENOTDIR";
    case ENOSPC: return "ENOSPC";
    case EDQUOT: return "EDQUOT";
    case EEXIST: return "EEXIST";
    case ELOOP: return "ELOOP";
    default: return "EOTHER";
    }
}

static const char *fstype(const char *path) {
    struct statfs fs;
    if (statfs(path, &fs) != 0) return "";
    if ((unsigned long)fs.f_type == TMPFS_MAGIC) return "tmpfs";
    if ((unsigned long)fs.f_type == OVERLAY_MAGIC) return "overlay";
    return "other";
}

/* try_file: create, write and remove a probe file in dir, as tempfile does; 0 or errno */
static int try_file(const char *dir) {
    char name[PATH_MAX];
    static unsigned n;
    int r = snprintf(name, sizeof name, "%s/.volinit-probe-%ld-%u-%ld", dir, (long)getpid(), n++,
                     (long)time(NULL));
    if (r < 0 || (size_t)r >= sizeof name) return ENAMETOOLONG;
    int fd = open(name, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0) return errno;
    int err = 0;
    if (write(fd, "blat", 4) != 4) err = errno ? errno : EIO;
    close(fd);
    unlink(name);
    return err;
}

/* nearest: the nearest existing ancestor of path (path itself excluded), into out */
static void nearest(const char *path, char *out, size_t len) {
    snprintf(out, len, "%s", path);
    for (;;) {
        char *slash = strrchr(out, '/');
        if (slash == NULL) { snprintf(out, len, "/"); return; }
        if (slash == out) { out[1] = '\0'; return; }
        *slash = '\0';
        struct stat st;
        if (stat(out, &st) == 0) return;
    }
}

static void print_id(void) {
    gid_t groups[64];
    int n = getgroups(64, groups);
    printf("{\"fact\":\"id\",\"uid\":%ld,\"gid\":%ld,\"groups\":[", (long)getuid(), (long)getgid());
    for (int i = 0; i < n; i++) printf("%s%ld", i ? "," : "", (long)groups[i]);
    printf("]}\n");
}

/* temp: Python's tempfile._candidate_tempdir_list order, first dir that takes a file wins */
static void temp(void) {
    const char *cands[8];
    const char *how[8];
    int n = 0;
    static const char *vars[] = {"TMPDIR", "TEMP", "TMP"};
    for (int i = 0; i < 3; i++) {
        const char *v = getenv(vars[i]);
        if (v && *v) { cands[n] = v; how[n++] = vars[i]; }
    }
    static const char *dirs[] = {"/tmp", "/var/tmp", "/usr/tmp"};
    for (int i = 0; i < 3; i++) { cands[n] = dirs[i]; how[n++] = dirs[i]; }
    static char cwd[PATH_MAX];
    if (getcwd(cwd, sizeof cwd) == NULL) snprintf(cwd, sizeof cwd, ".");
    cands[n] = cwd; how[n++] = "cwd";
    for (int i = 0; i < n; i++) {
        char abs[2 * PATH_MAX];
        if (cands[i][0] == '/') snprintf(abs, sizeof abs, "%s", cands[i]);
        else snprintf(abs, sizeof abs, "%s/%s", cwd, cands[i]);
        int err = try_file(abs);
        printf("{\"fact\":\"temp\",\"how\":");
        json_str(how[i]);
        printf(",\"path\":");
        json_str(abs);
        printf(",\"ok\":%s,\"errno\":\"%s\"}\n", err ? "false" : "true", errname(err));
        if (!err) {
            struct statvfs vfs;
            unsigned long long free_bytes = 0;
            if (statvfs(abs, &vfs) == 0) free_bytes = (unsigned long long)vfs.f_bavail * vfs.f_frsize;
            printf("{\"fact\":\"tempdir\",\"path\":");
            json_str(abs);
            printf(",\"free\":%llu,\"fstype\":\"%s\"}\n", free_bytes, fstype(abs));
            return;
        }
    }
    printf("{\"fact\":\"tempdir\",\"path\":null}\n");
}

/* cache_dir: can this user write dir, or make it (the nearest existing parent takes entries)? */
static void cache_dir(const char *var, const char *dir) {
    char abs[2 * PATH_MAX];
    if (dir[0] == '/') snprintf(abs, sizeof abs, "%s", dir);
    else {
        char cwd[PATH_MAX];
        if (getcwd(cwd, sizeof cwd) == NULL) snprintf(cwd, sizeof cwd, "/");
        snprintf(abs, sizeof abs, "%s/%s", cwd, dir);
    }
    struct stat st;
    printf("{\"fact\":\"cache\",\"var\":");
    json_str(var);
    printf(",\"path\":");
    json_str(abs);
    if (stat(abs, &st) == 0) {
        int err = S_ISDIR(st.st_mode) ? try_file(abs) : ENOTDIR;
        printf(",\"exists\":true,\"uid\":%ld,\"gid\":%ld,\"mode\":%lu,\"ok\":%s,\"errno\":\"%s\"}\n",
               (long)st.st_uid, (long)st.st_gid, (unsigned long)(st.st_mode & 07777),
               err ? "false" : "true", errname(err));
        return;
    }
    char parent[PATH_MAX];
    nearest(abs, parent, sizeof parent);
    struct stat pst;
    int have = stat(parent, &pst) == 0;
    /* access(), not mkdir: check never leaves a dir behind; access reports EROFS too */
    int err = access(parent, W_OK | X_OK) == 0 ? 0 : errno;
    printf(",\"exists\":false,\"parent\":");
    json_str(parent);
    printf(",\"parent_uid\":%ld,\"parent_gid\":%ld,\"parent_mode\":%lu,\"ok\":%s,\"errno\":\"%s\"}\n",
           have ? (long)pst.st_uid : -1L, have ? (long)pst.st_gid : -1L,
           have ? (unsigned long)(pst.st_mode & 07777) : 0UL, err ? "false" : "true", errname(err));
}

static void caches(void) {
    static const char *vars[] = {"XDG_CACHE_HOME", "HF_HOME", "TORCH_HOME"};
    for (int i = 0; i < 3; i++) {
        const char *v = getenv(vars[i]);
        if (v && *v) cache_dir(vars[i], v);
    }
    const char *dirs = getenv("VOLINIT_DIRS");
    if (dirs && *dirs) {
        char buf[8192];
        snprintf(buf, sizeof buf, "%s", dirs);
        for (char *save = NULL, *tok = strtok_r(buf, " \t\n:", &save); tok; tok = strtok_r(NULL, " \t\n:", &save))
            cache_dir("VOLINIT_DIRS", tok);
    }
    const char *home = getenv("HOME");
    const char *xdg = getenv("XDG_CACHE_HOME");
    if (home && *home && !(xdg && *xdg)) {
        char c[PATH_MAX];
        snprintf(c, sizeof c, "%s/.cache", strcmp(home, "/") ? home : "");
        cache_dir("HOME", home);
        cache_dir("HOME/.cache", c);
    }
}

static void volume(const char *dir) {
    struct stat st;
    printf("{\"fact\":\"volume\",\"path\":");
    json_str(dir);
    if (lstat(dir, &st) != 0) {
        printf(",\"exists\":false,\"errno\":\"%s\"}\n", errname(errno));
        return;
    }
    int empty = 1;
    DIR *d = opendir(dir);
    if (d) {
        struct dirent *e;
        while ((e = readdir(d)) != NULL)
            if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) { empty = 0; break; }
        closedir(d);
    } else empty = 0;
    int err = try_file(dir);
    printf(",\"exists\":true,\"uid\":%ld,\"gid\":%ld,\"mode\":%lu,\"empty\":%s,\"ok\":%s,\"errno\":\"%s\"}\n",
           (long)st.st_uid, (long)st.st_gid, (unsigned long)(st.st_mode & 07777), empty ? "true" : "false",
           err ? "false" : "true", errname(err));
}

static void persist(const char *dir) {
    char at[PATH_MAX];
    struct stat st;
    snprintf(at, sizeof at, "%s", dir);
    if (stat(at, &st) != 0) nearest(dir, at, sizeof at);
    printf("{\"fact\":\"persist\",\"path\":");
    json_str(dir);
    printf(",\"at\":");
    json_str(at);
    printf(",\"fstype\":\"%s\"}\n", fstype(at));
}

int main(int argc, char **argv) {
    const char *vols[MAX_ARGS], *keep[MAX_ARGS];
    int nv = 0, nk = 0;
    for (int i = 1; i < argc; i++) {
        if (i + 1 < argc && strcmp(argv[i], "--volume") == 0 && nv < MAX_ARGS) vols[nv++] = argv[++i];
        else if (i + 1 < argc && strcmp(argv[i], "--persist") == 0 && nk < MAX_ARGS) keep[nk++] = argv[++i];
        else {
            fprintf(stderr, "volinit-probe: error: unknown argument %s (usage: volinit-probe [--volume DIR]... "
                            "[--persist DIR]...)\n", argv[i]);
            return 2;
        }
    }
    print_id();
    temp();
    caches();
    for (int i = 0; i < nv; i++) volume(vols[i]);
    for (int i = 0; i < nk; i++) persist(keep[i]);
    return fflush(stdout) == 0 ? 0 : 1;
}
