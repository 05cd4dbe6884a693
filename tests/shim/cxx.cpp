// C++ operators through libtwinheap: standard containers on several threads (their output is
// compared with a run without the shim), throwing new (std::bad_alloc through the shim's assembly
// frames), the new-handler loop, a new-handler that throws its own exception, nothrow new, aligned
// new/delete and sized delete.
#include <atomic>
#include <cstdint>
#include <cstdio>
#include <map>
#include <memory>
#include <new>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

static int checks, failed;
#define CHECK(c)                                                             \
    do {                                                                     \
        checks++;                                                            \
        if (!(c)) {                                                          \
            failed++;                                                        \
            std::fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #c); \
        }                                                                    \
    } while (0)

static std::uint64_t work(int id) {
    std::map<int, std::string> m;
    std::unordered_map<std::string, std::vector<int>> u;
    std::vector<std::shared_ptr<std::string>> shared;
    std::uint64_t sum = 0;
    for (int i = 0; i < 30000; i++) {
        std::string s = "k" + std::to_string(i * 7 + id);
        m[i % 5000] = s + s;
        u[s].push_back(i);
        if (i % 3 == 0) shared.push_back(std::make_shared<std::string>(s));
        if (i % 1000 == 999) {
            u.clear();
            shared.erase(shared.begin(), shared.begin() + shared.size() / 2);
        }
    }
    for (auto &kv : m) sum = sum * 31 + kv.second.size() + kv.first;
    for (auto &p : shared) sum += p->size();
    return sum;
}

static int handler_calls;
static void counting_handler() {
    if (++handler_calls == 3) std::set_new_handler(nullptr); // third call: give up, new throws
}
struct Custom {};
static void throwing_handler() { throw Custom{}; }

struct alignas(256) Wide {
    char bytes[300];
};

int main() {
    // containers on threads; the printed checksums must match a run without the shim
    std::vector<std::thread> threads;
    std::vector<std::uint64_t> sums(4);
    for (int t = 0; t < 4; t++) threads.emplace_back([t, &sums] { sums[t] = work(t); });
    for (auto &th : threads) th.join();
    for (int t = 0; t < 4; t++) std::printf("sum[%d] = %llu\n", t, (unsigned long long)sums[t]);

    volatile std::size_t huge = SIZE_MAX / 2;
    bool caught = false;
    try {
        char *p = new char[huge];
        p[0] = 1;
    } catch (const std::bad_alloc &) {
        caught = true;
    }
    CHECK(caught);

    std::set_new_handler(counting_handler);
    caught = false;
    try {
        char *p = static_cast<char *>(::operator new(huge));
        p[0] = 1;
    } catch (const std::bad_alloc &) {
        caught = true;
    }
    CHECK(caught);
    CHECK(handler_calls == 3);

    std::set_new_handler(throwing_handler);
    bool custom = false;
    try {
        char *p = static_cast<char *>(::operator new(huge, std::align_val_t(64)));
        p[0] = 1;
    } catch (const Custom &) {
        custom = true;
    }
    CHECK(custom);
    std::set_new_handler(nullptr);

    CHECK(new (std::nothrow) char[huge] == nullptr);
    CHECK(::operator new(huge, std::align_val_t(4096), std::nothrow) == nullptr);

    Wide *w = new Wide[7];
    CHECK(reinterpret_cast<std::uintptr_t>(w) % 256 == 0);
    delete[] w;
    Wide *one = new Wide;
    CHECK(reinterpret_cast<std::uintptr_t>(one) % 256 == 0);
    delete one; // sized + aligned delete
    for (int i = 1; i < 100000; i = i * 2 + 1) {
        std::vector<char> v(static_cast<std::size_t>(i), 'x');
        CHECK(v.back() == 'x');
    } // std::allocator uses sized delete
    void *a = ::operator new(1000, std::align_val_t(1 << 20));
    CHECK(reinterpret_cast<std::uintptr_t>(a) % (1 << 20) == 0);
    ::operator delete(a, 1000, std::align_val_t(1 << 20));

    std::fprintf(stderr, "cxx: %d checks, %d failed\n", checks, failed);
    return failed ? 1 : 0;
}
