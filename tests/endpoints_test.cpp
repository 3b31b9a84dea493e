// Placeholder: replaced by the real tests of agent/role_endpoints.
#include <catch2/catch.hpp>
TEST_CASE("endpoints placeholder", "[endpoints]") { REQUIRE(1 + 1 == 2); }
