/* The decoder's scanner: one pass over a message that reads the values of a fixed list of top-level
 * fields, or gives up.
 *
 * It reads a subset of JSON and nothing else: an object whose texts are ASCII with no escape, whose
 * wanted fields hold a string, null or an integer of at most 18 digits, each at most once. Anything
 * else, valid JSON or not, is None: the careful path (orjson and the schema's checks) then decides
 * and words the rejection, so this scanner never judges a message, it only declines one. Fields it
 * does not want are skipped, their values checked against JSON's grammar (so no invalid message gets
 * past it) to a depth of 64.
 *
 * It judges no rule of the schema either, but two facts about texts, which the decoder's rules then
 * use: a wanted field with choices (an enum) reads back as that choice's own string or None (any
 * other value declines the message), and the last item of the result is a mask of the fields whose text is
 * "plain digits": ASCII digits with at most one point, at least one digit (what
 * ``text.replace(".", "", 1).isdigit()`` says of an ASCII text).
 *
 * A recurring field (a symbol, a currency, a contract size) keeps its recent texts: a text met again
 * reads back as the very str made before, so the decoder's caches find it by identity, with its hash
 * computed once, and no str is made.
 *
 * With a layout, it also writes the message's texts into one bytes object (the duplicate window's
 * packed form of a fill, when the decoder accepts the texts as they are): literals, fields' texts and
 * their lengths, in the layout's order; None when a field the layout takes is absent, null or a
 * negative integer.
 *
 * Built by setup.py beside the mypyc modules; without it, the decoder scans with msgspec instead.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

#define MAX_FIELDS 63
#define MAX_DEPTH 64
#define MAX_INTEGER_DIGITS 18
#define RECENT_SLOTS 16 /* texts remembered per recurring field: a power of 2 */
#define MAX_LAYOUT 64

/* A piece of the packed form: a field's text, the decimal length of a field's text, or a literal. */
enum { PIECE_TEXT, PIECE_LENGTH, PIECE_LITERAL };
typedef struct {
    int kind;
    Py_ssize_t field;
    const char *literal;
    Py_ssize_t length;
} Piece;

/* Where a wanted field's text is in the message: inside a string's quotes, or an integer's digits. */
typedef struct {
    const unsigned char *start;
    Py_ssize_t length; /* -1: absent or null */
    int negative;
} Text;

typedef const unsigned char *Cursor;

typedef struct {
    PyObject_HEAD
    Py_ssize_t count;
    /* the wanted fields' names (bytes) and choices (None, or a tuple of ASCII str) */
    PyObject *names;
    PyObject *choices;
    /* where the last field found was: fields usually come in the same order */
    Py_ssize_t lengths[MAX_FIELDS];
    const char *texts[MAX_FIELDS];
    /* recurring fields' recent texts, by a hash of their bytes: a text met again is the same str */
    char recurring[MAX_FIELDS];
    PyObject *recent[MAX_FIELDS][RECENT_SLOTS];
    /* the packed form, written from the message's texts when every field it takes is there */
    PyObject *layout;
    Py_ssize_t pieces;
    Piece piece[MAX_LAYOUT];
} Scanner;

static inline int is_digit(unsigned char c) { return c >= '0' && c <= '9'; }

static inline Cursor skip_space(Cursor p, Cursor end) {
    while (p < end && (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t')) {
        p++;
    }
    return p;
}

/* What a byte is inside a string: the scanner stops at a quote and at what it declines. */
enum { BYTE_TEXT, BYTE_DIGIT, BYTE_POINT, BYTE_QUOTE, BYTE_DECLINED };
static unsigned char byte_class[256];

static void classify_bytes(void) {
    for (int c = 0; c < 256; c++) {
        byte_class[c] = (c < 0x20 || c >= 0x80 || c == '\\') ? BYTE_DECLINED : BYTE_TEXT;
    }
    for (int c = '0'; c <= '9'; c++) {
        byte_class[c] = BYTE_DIGIT;
    }
    byte_class['.'] = BYTE_POINT;
    byte_class['"'] = BYTE_QUOTE;
}

/* From just after a string's opening quote: where its closing quote is; NULL for an escape, a
 * control character, a byte beyond ASCII or no closing quote. */
static inline Cursor string_end(Cursor p, Cursor end) {
    while (p < end && byte_class[*p] < BYTE_QUOTE) {
        p++;
    }
    return (p < end && *p == '"') ? p : NULL;
}

/* ``string_end``, and whether the text is plain digits: ASCII digits with at most one point, at
 * least one digit. */
static inline Cursor string_end_plain(Cursor p, Cursor end, int *plain) {
    int digits = 0, points = 0, others = 0;
    for (; p < end; p++) {
        switch (byte_class[*p]) {
        case BYTE_TEXT:
            others = 1;
            break;
        case BYTE_DIGIT:
            digits = 1;
            break;
        case BYTE_POINT:
            points++;
            break;
        case BYTE_QUOTE:
            *plain = digits && !others && points <= 1;
            return p;
        default:
            return NULL;
        }
    }
    return NULL;
}

/* Writes the decimal digits of n >= 0 at out (which has room for 20), and says how many. */
static inline Py_ssize_t write_decimal(Py_ssize_t n, char *out) {
    char reversed[24];
    Py_ssize_t count = 0;
    do {
        reversed[count++] = (char)('0' + n % 10);
        n /= 10;
    } while (n > 0);
    for (Py_ssize_t index = 0; index < count; index++) {
        out[index] = reversed[count - 1 - index];
    }
    return count;
}

/* Where a JSON number starting at p ends; NULL when it is not one. *integer: no fraction, no exponent. */
static Cursor number_end(Cursor p, Cursor end, int *integer) {
    if (p < end && *p == '-') {
        p++;
    }
    if (p >= end) {
        return NULL;
    }
    if (*p == '0') {
        p++;
    } else if (*p >= '1' && *p <= '9') {
        while (p < end && is_digit(*p)) {
            p++;
        }
    } else {
        return NULL;
    }
    *integer = 1;
    if (p < end && *p == '.') {
        p++;
        if (p >= end || !is_digit(*p)) {
            return NULL;
        }
        while (p < end && is_digit(*p)) {
            p++;
        }
        *integer = 0;
    }
    if (p < end && (*p == 'e' || *p == 'E')) {
        p++;
        if (p < end && (*p == '+' || *p == '-')) {
            p++;
        }
        if (p >= end || !is_digit(*p)) {
            return NULL;
        }
        while (p < end && is_digit(*p)) {
            p++;
        }
        *integer = 0;
    }
    return p;
}

static inline Cursor literal_end(Cursor p, Cursor end, const char *word, Py_ssize_t length) {
    return (end - p >= length && memcmp(p, word, (size_t)length) == 0) ? p + length : NULL;
}

/* Where the JSON value starting at p ends; NULL when it is not one (or nests deeper than MAX_DEPTH). */
static Cursor value_end(Cursor p, Cursor end, int depth) {
    int integer;
    if (p >= end) {
        return NULL;
    }
    switch (*p) {
    case '"':
        p = string_end(p + 1, end);
        return p == NULL ? NULL : p + 1;
    case 't':
        return literal_end(p, end, "true", 4);
    case 'f':
        return literal_end(p, end, "false", 5);
    case 'n':
        return literal_end(p, end, "null", 4);
    case '[':
        if (depth >= MAX_DEPTH) {
            return NULL;
        }
        p = skip_space(p + 1, end);
        if (p < end && *p == ']') {
            return p + 1;
        }
        for (;;) {
            p = value_end(p, end, depth + 1);
            if (p == NULL) {
                return NULL;
            }
            p = skip_space(p, end);
            if (p < end && *p == ',') {
                p = skip_space(p + 1, end);
            } else if (p < end && *p == ']') {
                return p + 1;
            } else {
                return NULL;
            }
        }
    case '{':
        if (depth >= MAX_DEPTH) {
            return NULL;
        }
        p = skip_space(p + 1, end);
        if (p < end && *p == '}') {
            return p + 1;
        }
        for (;;) {
            if (p >= end || *p != '"' || (p = string_end(p + 1, end)) == NULL) {
                return NULL;
            }
            p = skip_space(p + 1, end);
            if (p >= end || *p != ':') {
                return NULL;
            }
            p = value_end(skip_space(p + 1, end), end, depth + 1);
            if (p == NULL) {
                return NULL;
            }
            p = skip_space(p, end);
            if (p < end && *p == ',') {
                p = skip_space(p + 1, end);
            } else if (p < end && *p == '}') {
                return p + 1;
            } else {
                return NULL;
            }
        }
    default:
        return number_end(p, end, &integer);
    }
}

/* The wanted field named by the key [key, key + length), looked for from ``next`` on; -1 if none. */
static inline Py_ssize_t field_of(Scanner *self, Cursor key, Py_ssize_t length, Py_ssize_t next) {
    Py_ssize_t count = self->count;
    for (Py_ssize_t tried = 0; tried < count; tried++) {
        Py_ssize_t field = next + tried;
        if (field >= count) {
            field -= count;
        }
        if (self->lengths[field] == length && memcmp(self->texts[field], key, (size_t)length) == 0) {
            return field;
        }
    }
    return -1;
}

/* The choice of ``choices`` (a tuple of ASCII str) spelled [text, text + length), borrowed; NULL if none. */
static inline PyObject *choice_of(PyObject *choices, Cursor text, Py_ssize_t length) {
    Py_ssize_t count = PyTuple_GET_SIZE(choices);
    for (Py_ssize_t index = 0; index < count; index++) {
        PyObject *choice = PyTuple_GET_ITEM(choices, index);
        if (PyUnicode_GET_LENGTH(choice) == length
            && memcmp(PyUnicode_1BYTE_DATA(choice), text, (size_t)length) == 0) {
            return choice;
        }
    }
    return NULL;
}

static inline PyObject *new_text(Cursor text, Py_ssize_t length) {
    PyObject *value = PyUnicode_New(length, 127);
    if (value != NULL) {
        memcpy(PyUnicode_1BYTE_DATA(value), text, (size_t)length);
    }
    return value;
}

/* The str of a recurring field's text: the one made when it last came, if its slot still holds it. */
static inline PyObject *recurring_text(PyObject **recent, Cursor text, Py_ssize_t length) {
    unsigned int hash = 2166136261u; /* FNV-1a */
    for (Py_ssize_t index = 0; index < length; index++) {
        hash = (hash ^ text[index]) * 16777619u;
    }
    PyObject **slot = &recent[hash & (RECENT_SLOTS - 1)];
    PyObject *known = *slot;
    if (known != NULL && PyUnicode_GET_LENGTH(known) == length
        && memcmp(PyUnicode_1BYTE_DATA(known), text, (size_t)length) == 0) {
        Py_INCREF(known);
        return known;
    }
    PyObject *value = new_text(text, length);
    if (value != NULL) {
        Py_INCREF(value);
        Py_XSETREF(*slot, value);
    }
    return value;
}

/* The value at *at of a wanted field (a new reference), *at moved past it; NULL (no exception set)
 * when the scanner declines it, or with an exception set when memory ran out. ``recent``: the
 * field's recent texts, when it recurs. */
static PyObject *wanted_value(Cursor *at, Cursor end, PyObject *choices, PyObject **recent, int *plain, Text *text) {
    Cursor p = *at, last;
    int integer;
    PyObject *value;
    if (p >= end) {
        return NULL;
    }
    if (*p == '"') {
        last = string_end_plain(p + 1, end, plain);
        if (last == NULL) {
            return NULL;
        }
        Py_ssize_t length = last - (p + 1);
        text->start = p + 1;
        text->length = length;
        if (choices != Py_None) {
            value = choice_of(choices, p + 1, length);
            if (value == NULL) {
                return NULL;
            }
            Py_INCREF(value);
        } else {
            value = recent != NULL ? recurring_text(recent, p + 1, length) : new_text(p + 1, length);
            if (value == NULL) {
                return NULL;
            }
        }
        *at = last + 1;
        return value;
    }
    if (*p == 'n') {
        last = literal_end(p, end, "null", 4);
        if (last == NULL) {
            return NULL;
        }
        *at = last;
        Py_RETURN_NONE;
    }
    if (choices != Py_None) {
        return NULL; /* an enum's value is one of its texts, or null */
    }
    last = number_end(p, end, &integer);
    if (last == NULL || !integer) {
        return NULL;
    }
    int negative = *p == '-';
    Cursor digit = p + negative;
    text->start = p;
    text->length = last - p;
    text->negative = negative;
    if (last - digit > MAX_INTEGER_DIGITS) {
        return NULL;
    }
    long long number = 0;
    for (; digit < last; digit++) {
        number = number * 10 + (*digit - '0');
    }
    *at = last;
    return PyLong_FromLongLong(negative ? -number : number);
}

/* The packed form of the message's texts (a new reference); None without a layout, or when a field
 * it takes is absent, null or a negative integer; NULL when memory ran out. */
static PyObject *packed_form(Scanner *self, const Text *texts) {
    Py_ssize_t size = 0;
    char digits[24];
    if (self->pieces == 0) {
        Py_RETURN_NONE; /* no layout */
    }
    for (Py_ssize_t index = 0; index < self->pieces; index++) {
        const Piece *piece = &self->piece[index];
        if (piece->kind == PIECE_LITERAL) {
            size += piece->length;
            continue;
        }
        const Text *text = &texts[piece->field];
        if (text->length < 0 || text->negative) {
            Py_RETURN_NONE;
        }
        size += piece->kind == PIECE_TEXT ? text->length : write_decimal(text->length, digits);
    }
    PyObject *packed = PyBytes_FromStringAndSize(NULL, size);
    if (packed == NULL) {
        return NULL;
    }
    char *out = PyBytes_AS_STRING(packed);
    for (Py_ssize_t index = 0; index < self->pieces; index++) {
        const Piece *piece = &self->piece[index];
        const Text *text = &texts[piece->field];
        if (piece->kind == PIECE_LITERAL) {
            memcpy(out, piece->literal, (size_t)piece->length);
            out += piece->length;
        } else if (piece->kind == PIECE_TEXT) {
            memcpy(out, text->start, (size_t)text->length);
            out += text->length;
        } else {
            out += write_decimal(text->length, out);
        }
    }
    return packed;
}

static PyObject *Scanner_scan(Scanner *self, PyObject *data) {
    PyObject *values[MAX_FIELDS] = {NULL};
    Text texts[MAX_FIELDS];
    Py_ssize_t count = self->count, next = 0;
    unsigned long long plain_mask = 0;
    PyObject *result = NULL;
    if (!PyBytes_Check(data)) {
        Py_RETURN_NONE;
    }
    Cursor p = (Cursor)PyBytes_AS_STRING(data);
    Cursor end = p + PyBytes_GET_SIZE(data);
    p = skip_space(p, end);
    if (p >= end || *p != '{') {
        goto decline;
    }
    for (Py_ssize_t field = 0; field < count; field++) {
        texts[field].length = -1;
        texts[field].negative = 0;
    }
    p = skip_space(p + 1, end);
    if (p < end && *p == '}') {
        p++;
    } else {
        for (;;) {
            if (p >= end || *p != '"') {
                goto decline;
            }
            Cursor key = p + 1, key_end = string_end(key, end);
            if (key_end == NULL) {
                goto decline;
            }
            p = skip_space(key_end + 1, end);
            if (p >= end || *p != ':') {
                goto decline;
            }
            p = skip_space(p + 1, end);
            Py_ssize_t field = field_of(self, key, key_end - key, next);
            if (field < 0) {
                p = value_end(p, end, 1);
                if (p == NULL) {
                    goto decline;
                }
            } else {
                int plain = 0;
                if (values[field] != NULL) {
                    goto decline; /* sent twice: the careful path keeps the last */
                }
                PyObject **recent = self->recurring[field] ? self->recent[field] : NULL;
                values[field] =
                    wanted_value(&p, end, PyTuple_GET_ITEM(self->choices, field), recent, &plain, &texts[field]);
                if (values[field] == NULL) {
                    goto decline;
                }
                if (plain) {
                    plain_mask |= 1ULL << field;
                }
                next = field + 1 < count ? field + 1 : 0;
            }
            p = skip_space(p, end);
            if (p < end && *p == ',') {
                p = skip_space(p + 1, end);
            } else if (p < end && *p == '}') {
                p++;
                break;
            } else {
                goto decline;
            }
        }
    }
    if (skip_space(p, end) != end) {
        goto decline;
    }
    result = PyTuple_New(count + 2);
    if (result == NULL) {
        goto fail;
    }
    for (Py_ssize_t field = 0; field < count; field++) {
        PyObject *value = values[field];
        if (value == NULL) {
            value = Py_None;
            Py_INCREF(value);
        }
        PyTuple_SET_ITEM(result, field, value);
    }
    PyObject *mask = PyLong_FromUnsignedLongLong(plain_mask);
    if (mask == NULL) {
        Py_DECREF(result);
        return NULL;
    }
    PyTuple_SET_ITEM(result, count, mask);
    PyObject *packed = packed_form(self, texts);
    if (packed == NULL) {
        Py_DECREF(result);
        return NULL;
    }
    PyTuple_SET_ITEM(result, count + 1, packed);
    return result;

decline:
    if (PyErr_Occurred()) {
        goto fail;
    }
    for (Py_ssize_t field = 0; field < count; field++) {
        Py_XDECREF(values[field]);
    }
    Py_RETURN_NONE;
fail:
    for (Py_ssize_t field = 0; field < count; field++) {
        Py_XDECREF(values[field]);
    }
    return NULL;
}

static void Scanner_clear_recent(Scanner *self) {
    for (Py_ssize_t field = 0; field < MAX_FIELDS; field++) {
        for (int slot = 0; slot < RECENT_SLOTS; slot++) {
            Py_CLEAR(self->recent[field][slot]);
        }
    }
}

static int Scanner_init(Scanner *self, PyObject *args, PyObject *kwargs) {
    static char *keywords[] = {"names", "choices", "recurring", "layout", NULL};
    PyObject *names, *choices, *recurring, *layout;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O!O!O!O!", keywords, &PyTuple_Type, &names, &PyTuple_Type,
                                     &choices, &PyTuple_Type, &recurring, &PyTuple_Type, &layout)) {
        return -1;
    }
    if (self->names != NULL) { /* its fields point into the tuples it holds: they stay */
        PyErr_SetString(PyExc_TypeError, "a Scanner is initialised once");
        return -1;
    }
    if (PyTuple_GET_SIZE(layout) > MAX_LAYOUT) {
        PyErr_Format(PyExc_ValueError, "a layout of at most %d pieces", MAX_LAYOUT);
        return -1;
    }
    Py_ssize_t count = PyTuple_GET_SIZE(names);
    if (count > MAX_FIELDS || PyTuple_GET_SIZE(choices) != count || PyTuple_GET_SIZE(recurring) != count) {
        PyErr_Format(PyExc_ValueError, "at most %d names, and as many choices and recurring flags", MAX_FIELDS);
        return -1;
    }
    for (Py_ssize_t field = 0; field < count; field++) {
        PyObject *name = PyTuple_GET_ITEM(names, field), *options = PyTuple_GET_ITEM(choices, field);
        if (!PyBytes_Check(name)) {
            PyErr_SetString(PyExc_TypeError, "names must be bytes");
            return -1;
        }
        if (options != Py_None) {
            if (!PyTuple_Check(options)) {
                PyErr_SetString(PyExc_TypeError, "choices must be None or tuples of str");
                return -1;
            }
            for (Py_ssize_t index = 0; index < PyTuple_GET_SIZE(options); index++) {
                PyObject *option = PyTuple_GET_ITEM(options, index);
                if (!PyUnicode_Check(option) || !PyUnicode_IS_ASCII(option)) {
                    PyErr_SetString(PyExc_TypeError, "choices must be ASCII str");
                    return -1;
                }
            }
        }
        int recurs = PyObject_IsTrue(PyTuple_GET_ITEM(recurring, field));
        if (recurs < 0) {
            return -1;
        }
        self->recurring[field] = (char)recurs;
        self->lengths[field] = PyBytes_GET_SIZE(name);
        self->texts[field] = PyBytes_AS_STRING(name);
    }
    for (Py_ssize_t index = 0; index < PyTuple_GET_SIZE(layout); index++) {
        PyObject *item = PyTuple_GET_ITEM(layout, index);
        Piece *piece = &self->piece[index];
        if (PyBytes_Check(item)) {
            piece->kind = PIECE_LITERAL;
            piece->literal = PyBytes_AS_STRING(item);
            piece->length = PyBytes_GET_SIZE(item);
            piece->field = 0;
            continue;
        }
        Py_ssize_t field = PyLong_Check(item) ? PyLong_AsSsize_t(item) : count;
        if (field == -1 && PyErr_Occurred()) {
            return -1;
        }
        piece->kind = field >= 0 ? PIECE_TEXT : PIECE_LENGTH;
        piece->field = field >= 0 ? field : ~field;
        if (piece->field >= count) {
            PyErr_SetString(PyExc_ValueError, "a layout's pieces are bytes, a field's index or ~index (its length)");
            return -1;
        }
    }
    Py_INCREF(names);
    Py_INCREF(choices);
    Py_INCREF(layout);
    Py_XSETREF(self->names, names);
    Py_XSETREF(self->choices, choices);
    Py_XSETREF(self->layout, layout);
    self->pieces = PyTuple_GET_SIZE(layout);
    self->count = count;
    return 0;
}

static void Scanner_dealloc(Scanner *self) {
    Scanner_clear_recent(self);
    Py_XDECREF(self->names);
    Py_XDECREF(self->choices);
    Py_XDECREF(self->layout);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMethodDef Scanner_methods[] = {
    {"scan", (PyCFunction)Scanner_scan, METH_O,
     "scan(data) -> (value of each field, ..., plain-digits mask, packed or None) or None when it declines"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject ScannerType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "processor.codec._scan.Scanner",
    .tp_basicsize = sizeof(Scanner),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Scanner(names, choices, recurring, layout): reads the named top-level fields of a JSON object",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Scanner_init,
    .tp_dealloc = (destructor)Scanner_dealloc,
    .tp_methods = Scanner_methods,
};

static struct PyModuleDef scan_module = {
    PyModuleDef_HEAD_INIT, "processor.codec._scan", "The decoder's one-pass scanner (see _scan.c).", -1, NULL,
};

PyMODINIT_FUNC PyInit__scan(void) {
    classify_bytes();
    if (PyType_Ready(&ScannerType) < 0) {
        return NULL;
    }
    PyObject *module = PyModule_Create(&scan_module);
    if (module == NULL) {
        return NULL;
    }
    Py_INCREF(&ScannerType);
    if (PyModule_AddObject(module, "Scanner", (PyObject *)&ScannerType) < 0) {
        Py_DECREF(&ScannerType);
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
