/* SPDX-License-Identifier: MIT */
#ifndef MIRRORD_COMMON_LIST_H
#define MIRRORD_COMMON_LIST_H

#include <stdbool.h>
#include <stddef.h>

/* Intrusive circular doubly linked list (the Linux kernel's shape):
 * O(1) insert and remove, no allocation.  A list head is a node that
 * points to itself when empty. */
struct list {
  struct list *next, *prev;
};

#define LIST_INIT(name) { &(name), &(name) }
#define list_entry(ptr, type, member) \
  ((type *) ((char *) (ptr) - offsetof (type, member)))
#define list_for_each_safe(pos, tmp, head) \
  for ((pos) = (head)->next, (tmp) = (pos)->next; (pos) != (head); \
       (pos) = (tmp), (tmp) = (pos)->next)

static inline void list_init (struct list *l) { l->next = l->prev = l; }
static inline bool list_empty (const struct list *l) { return l->next == l; }

static inline void
list_add_tail (struct list *head, struct list *n)
{
  n->prev = head->prev;
  n->next = head;
  head->prev->next = n;
  head->prev = n;
}

static inline void
list_del (struct list *n)
{
  n->prev->next = n->next;
  n->next->prev = n->prev;
  n->next = n->prev = n;
}

#endif
