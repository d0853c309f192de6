/* SPDX-License-Identifier: MIT */
/* The replay driver of a fuzz target: runs every file named, or every
 * file in each directory named (in name order), once through
 * LLVMFuzzerTestOneInput.  So each build replays the corpus, crash
 * reproducers included, without libFuzzer.  Exits 0 when every file
 * ran and the target's own check (fuzz_replay_finish) passed. */
#include <config.h>

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <sys/stat.h>

#include "fuzz.h"

/* An input that hangs kills the test instead of blocking make check. */
#define INPUT_TIME_LIMIT_S 30

static int
replay_file (const char *path)
{
  FILE *f = fopen (path, "rb");
  uint8_t *data;
  long n;

  printf ("%s\n", path);
  fflush (stdout);
  if (f == NULL || fseek (f, 0, SEEK_END) == -1 || (n = ftell (f)) < 0) {
    perror (path);
    return -1;
  }
  rewind (f);
  data = malloc ((size_t) n + 1);
  if (data == NULL || fread (data, 1, (size_t) n, f) != (size_t) n) {
    perror (path);
    return -1;
  }
  fclose (f);
  alarm (INPUT_TIME_LIMIT_S);
  LLVMFuzzerTestOneInput (data, (size_t) n);
  alarm (0);
  free (data);
  return 0;
}

static int
replay_dir (const char *dir, unsigned *count)
{
  struct dirent **names;
  int n = scandir (dir, &names, NULL, alphasort), r = 0;

  if (n < 0) {
    perror (dir);
    return -1;
  }
  for (int k = 0; k < n; k++) {
    char p[4096];
    if (r == 0 && names[k]->d_name[0] != '.') {
      snprintf (p, sizeof p, "%s/%s", dir, names[k]->d_name);
      r = replay_file (p);
      *count += r == 0;
    }
    free (names[k]);
  }
  free (names);
  return r;
}

int
main (int argc, char **argv)
{
  unsigned count = 0;

  LLVMFuzzerInitialize (&argc, &argv);
  for (int i = 1; i < argc; i++) {
    struct stat st;
    if (stat (argv[i], &st) == -1) {
      perror (argv[i]);
      return 1;
    }
    if (S_ISDIR (st.st_mode) ? replay_dir (argv[i], &count) == -1
        : replay_file (argv[i]) == -1)
      return 1;
    count += !S_ISDIR (st.st_mode);
  }
  if (fuzz_replay_finish (count) == -1)
    return 1;
  return count ? 0 : 1;
}
